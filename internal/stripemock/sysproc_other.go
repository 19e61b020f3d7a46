//go:build !linux

package stripemock

import "syscall"

// sysProcAttr has nothing to add outside Linux: there, packages must call
// Stop (through Run in TestMain) to leave no stripe-mock behind.
func sysProcAttr() *syscall.SysProcAttr { return nil }
