// Command tally is the Tally prepaid-credits billing server and its
// operations tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCommand()
	if err := root.ExecuteContext(ctx); err != nil {
		// One readable line and a non-zero exit; never a stack trace.
		fmt.Fprintln(os.Stderr, "tally: "+err.Error())
		var usage usageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError is a mistake in the command line rather than a failure.
type usageError struct{ error }

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "tally",
		Short:         "Tally: a prepaid-credits billing API",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newServeCommand(), newMigrateCommand(), newSimulateCommand(), newTokenCommand(), newReconcileCommand(),
		newExportCommand(), newUsersCommand(), newHealthCommand())
	return root
}
