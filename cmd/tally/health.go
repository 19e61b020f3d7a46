package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
)

// newHealthCommand is the container health check: images without a shell
// or curl (the Dockerfile's) run the binary itself against /readyz.
func newHealthCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 if the server on --addr (else $TALLY_ADDR) is ready, 1 if not",
		Args:  cobra.NoArgs,
	}
	addr := cmd.Flags().String("addr", "", "the server's address (default $TALLY_ADDR, else 127.0.0.1:8080)")
	timeout := cmd.Flags().Duration("timeout", 3*time.Second, "how long to wait for the answer")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		flag, source := *addr, "--addr"
		if flag == "" {
			flag, source = os.Getenv("TALLY_ADDR"), "TALLY_ADDR"
		}
		if flag == "" {
			flag = "127.0.0.1:8080"
		}
		url, err := readinessURL(flag)
		if err != nil {
			return usageError{fmt.Errorf("%s: %w", source, err)}
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), *timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return usageError{fmt.Errorf("%s: %w", source, err)}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("not ready: %w", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("not ready: %s answered %d", url, resp.StatusCode)
		}
		fmt.Fprintln(cmd.OutOrStdout(), "ready")
		return nil
	}
	return cmd
}

// readinessURL turns a listen address into the URL to probe: a server
// listening on every interface (0.0.0.0, ::, or no host) is reached on loopback.
func readinessURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("want host:port, got %q", listen)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz", nil
}
