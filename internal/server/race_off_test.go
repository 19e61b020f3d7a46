//go:build !race

package server_test

const allocationsUnderRace = 1.0
