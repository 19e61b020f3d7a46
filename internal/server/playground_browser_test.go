package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/tally-billing/tally/internal/auth"
	"github.com/tally-billing/tally/internal/database"
	"github.com/tally-billing/tally/internal/testdb"
)

// chromium finds a headless-capable browser; without one the browser test
// skips, unless CI is set (CI installs Debian's chromium).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium found (install Debian's chromium package); CI runs the playground's browser test")
	}
	t.Skip("no Chromium found (apt-get install chromium); skipping the playground's browser test")
	return ""
}

// browserLog collects what the page did: every request's URL and every
// error the browser reported (exceptions, console errors, CSP refusals).
type browserLog struct {
	mu       sync.Mutex
	requests []string
	errors   []string
}

func (b *browserLog) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		u := e.Request.URL
		if len(u) > 80 {
			u = u[:80] + "…" // data: URLs of fonts
		}
		b.requests = append(b.requests, u)
	case *runtime.EventExceptionThrown:
		d := e.ExceptionDetails
		msg := d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		b.errors = append(b.errors, "exception: "+msg)
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError {
			var parts []string
			for _, a := range e.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			b.errors = append(b.errors, "console: "+strings.Join(parts, " "))
		}
	case *log.EventEntryAdded:
		if e.Entry.Level == log.EntryLevelError {
			b.errors = append(b.errors, fmt.Sprintf("%s: %s %s", e.Entry.Source, e.Entry.Text, e.Entry.URL))
		}
	}
}

func (b *browserLog) snapshot() (requests, errors []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.requests...), append([]string(nil), b.errors...)
}

// resultPane is the text of GraphiQL's result editor (CodeMirror keeps the
// whole text; the DOM holds only the lines in view).
const resultPane = `(() => { const cm = document.querySelector('.result-window .CodeMirror'); return cm ? cm.CodeMirror.getValue() : ''; })()`

// tabButton is the XPath of the opening tab titled name.
func tabButton(name string) chromedp.Search {
	return chromedp.Search(`//button[contains(@class,"graphiql-tab-button")][normalize-space()="` + name + `"]`)
}

// drivePlayground opens the playground at base, takes the development
// token with its button, and runs the GrantCredits tab, then the
// ViewerAndHistory tab, returning the tabs' titles and both answers as the
// result pane shows them.
func drivePlayground(ctx context.Context, base string) (tabs, grant, viewer string, err error) {
	if _, err = chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		return
	}
	if _, err = chromedp.Call(ctx, log.Enable, cdp.Empty{}); err != nil {
		return
	}
	err = chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`.graphiql-container .graphiql-execute-button`)),
	)
	if err != nil {
		return
	}
	if tabs, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`.graphiql-tabs`))); err != nil {
		return
	}
	err = chromedp.Do(ctx,
		chromedp.Click(chromedp.ID("tally-dev-token")),
		chromedp.WaitVisible(chromedp.CSS(`#tally-dev-token-status[data-state="ready"]`)),
	)
	if err != nil {
		return
	}
	if grant, err = runTab(ctx, "GrantCredits", "grantCredits"); err != nil {
		return
	}
	viewer, err = runTab(ctx, "ViewerAndHistory", "viewer")
	return
}

// runTab switches to the tab titled name, waits until its document is in
// the query editor, runs it and returns the answer once the result pane
// shows field. Each wait is for a state, so a slow machine is only slower.
func runTab(ctx context.Context, name, field string) (string, error) {
	editorHas := `(() => { const cm = document.querySelector('.graphiql-query-editor .CodeMirror'); return !!cm && /(query|mutation) ` + name + `\b/.test(cm.CodeMirror.getValue()); })()`
	err := chromedp.Do(ctx,
		chromedp.Click(tabButton(name)),
		chromedp.WaitVisible(chromedp.Search(`//*[contains(@class,"graphiql-tab-active")]//button[normalize-space()="`+name+`"]`)),
		chromedp.Action[chromedp.Void](func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
			_, err := chromedp.Poll[bool](editorHas, chromedp.WithPollingTimeout(time.Minute))(ctx, t)
			return chromedp.Void{}, err
		}),
		chromedp.Click(chromedp.CSS(`.graphiql-execute-button`)),
	)
	if err != nil {
		return "", fmt.Errorf("running the %s tab: %w", name, err)
	}
	answer, err := chromedp.Run(ctx, chromedp.Poll[string](resultPane+`.includes('"`+field+`"') && `+resultPane, chromedp.WithPollingTimeout(time.Minute)))
	if err != nil {
		shown, _ := chromedp.Run(context.WithoutCancel(ctx), chromedp.Evaluate[string](resultPane))
		return "", fmt.Errorf("waiting for the answer of the %s tab (the result pane shows %.300q): %w", name, shown, err)
	}
	return answer, nil
}

// TestPlaygroundInBrowser loads the playground in headless Chromium against
// a real server, takes the development token with its button, runs two of
// the opening tabs through the UI (a grant, then the viewer) and reads the
// answers in the result pane; no request may leave the server's origin.
func TestPlaygroundInBrowser(t *testing.T) {
	browser := chromium(t)
	testdb.Each(t, func(t *testing.T, db *database.DB) {
		a := newAPI(t, db, nil)
		root := token(t, "root", auth.RoleAdmin)
		a.ok(root, viewerQuery, nil)
		a.ok(root, grantMutation, map[string]any{"input": map[string]any{
			"externalUserId": "root", "amount": 1234, "reason": "browser test", "idempotencyKey": "browser-1",
		}})

		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(browser),
			chromedp.UserDataDir(t.TempDir()),
			chromedp.NoSandbox, // containers and CI run as root
			chromedp.DisableGPU,
			chromedp.WindowSize(1400, 1000),
		)
		actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
		defer cancelAlloc()
		bctx, cancelBrowser := chromedp.NewContext(actx)
		defer cancelBrowser()

		var seen browserLog
		if err := chromedp.Listen(bctx, seen.listen); err != nil {
			t.Fatal(err)
		}
		tabs, grantResult, viewerResult, err := drivePlayground(bctx, a.ts.URL)
		requests, errs := seen.snapshot()
		if err != nil {
			t.Fatalf("driving the playground: %v\nrequests: %v\nerrors: %v", err, requests, errs)
		}
		for _, tab := range []string{"ViewerAndHistory", "GrantCredits", "SpendCredits", "CreditPackages"} {
			if !strings.Contains(tabs, tab) {
				t.Errorf("no %s tab among %q", tab, tabs)
			}
		}

		var grant struct {
			Data struct {
				GrantCredits struct {
					User struct{ CreditsBalance int } `json:"user"`
				} `json:"grantCredits"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(grantResult), &grant); err != nil || grant.Data.GrantCredits.User.CreditsBalance != 1734 {
			t.Errorf("the grant tab showed %s, want root's balance 1234+500", grantResult)
		}
		var viewer struct {
			Data struct {
				Viewer struct {
					ExternalID     string `json:"externalId"`
					CreditsBalance int    `json:"creditsBalance"`
					Transactions   struct {
						TotalCount int `json:"totalCount"`
					} `json:"transactions"`
				} `json:"viewer"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(viewerResult), &viewer); err != nil {
			t.Fatalf("the result pane holds %q: %v", viewerResult, err)
		}
		if v := viewer.Data.Viewer; v.ExternalID != "root" || v.CreditsBalance != 1734 || v.Transactions.TotalCount != 2 {
			t.Errorf("the viewer tab showed %+v, want root with 1734 credits in 2 transactions", v)
		}
		// The grant went through the API, not only onto the screen.
		if r := a.ok(root, `{ viewer { creditsBalance } }`, nil); !strings.Contains(string(r.Data), `"creditsBalance":1734`) {
			t.Errorf("after the browser's grant the API says %s", r.Data)
		}

		if len(requests) < 6 {
			t.Errorf("only %d requests seen: %v", len(requests), requests)
		}
		for _, u := range requests {
			if !strings.HasPrefix(u, a.ts.URL+"/") && !strings.HasPrefix(u, "data:") {
				t.Errorf("a request left the server: %s", u)
			}
		}
		for _, e := range errs {
			t.Errorf("the browser reported: %s", e)
		}
	})
}
