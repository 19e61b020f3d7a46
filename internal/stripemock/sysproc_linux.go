package stripemock

import "syscall"

// sysProcAttr has the kernel kill stripe-mock when the test binary dies, so
// that a crashed or timed-out test run leaves no process behind. (The signal
// follows the OS thread that started the child; Go keeps its threads for the
// life of the process unless a goroutine exits while locked to one, which
// tests here do not do.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
