// Command tally is the Tally prepaid-credits billing server and its
// operations tools.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
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
		// Without a command, the help is what was asked for.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newServeCommand(), newMigrateCommand(), newSimulateCommand(), newTokenCommand(), newReconcileCommand(),
		newExportCommand(), newUsersCommand(), newHealthCommand(), newEventsCommand())
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes every wrong argument a usage error (exit
// 2), and every command that groups subcommands refuse an unknown one: by default cobra prints
// the help and exits 0 for `tally migrate frob`, and 1 for `tally frob`.
// A group other than the root also refuses to run without a subcommand,
// so that a script calling `tally migrate` learns it did nothing.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	if !cmd.HasSubCommands() {
		// cobra's own argument checks (NoArgs, ExactArgs) return plain
		// errors; they are usage errors all the same.
		if check := cmd.Args; check != nil {
			cmd.Args = func(c *cobra.Command, args []string) error {
				err := check(c, args)
				var usage usageError
				if err != nil && !errors.As(err, &usage) {
					return usageError{err}
				}
				return err
			}
		}
		return
	}
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return usageError{errors.New(msg + "; see " + c.CommandPath() + " --help")}
	}
	if cmd.HasParent() {
		cmd.RunE = func(c *cobra.Command, _ []string) error {
			names := []string{}
			for _, sub := range c.Commands() {
				if sub.IsAvailableCommand() {
					names = append(names, sub.Name())
				}
			}
			return usageError{fmt.Errorf("%s needs a subcommand: %s", c.CommandPath(), strings.Join(names, ", "))}
		}
	}
	for _, sub := range cmd.Commands() {
		refuseUnknownSubcommands(sub)
	}
}
