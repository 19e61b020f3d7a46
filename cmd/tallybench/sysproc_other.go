//go:build !linux

package main

import "syscall"

// sysProcAttr has nothing portable to add outside Linux: there, a Ctrl-C
// at the terminal reaches the server too, and the harness stops it anyway.
func sysProcAttr() *syscall.SysProcAttr { return nil }
