// Package outbound carries Tally's events out to the application's own HTTPS
// endpoints as webhooks that follow the Standard Webhooks specification
// (https://www.standardwebhooks.com/).
//
// This half of the package is the transport: endpoint secrets and the
// signature headers (sign.go), which endpoint URLs and addresses are allowed
// (policy.go), and a sender that posts one attempt without following
// redirects, without proxies and without connecting to an address the policy
// refuses, whatever DNS answers (sender.go). An endpoint URL comes from a
// tenant, so everything here treats it, and the response it leads to, as
// hostile.
package outbound
