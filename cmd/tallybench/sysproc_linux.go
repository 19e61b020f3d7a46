package main

import "syscall"

// sysProcAttr puts the server in a process group of its own, so that a
// Ctrl-C at the terminal reaches only the harness (which then stops the
// server after reporting what has run), and has the kernel kill the server
// if the harness dies without stopping it. (The death signal follows the
// OS thread that started the child; Go keeps its threads for the life of
// the process unless a goroutine exits while locked to one, which the
// harness does not do.)
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
