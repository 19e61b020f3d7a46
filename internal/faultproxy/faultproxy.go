// Package faultproxy is a TCP proxy for tests (and the benchmark) that stands between a
// client's connections and a PostgreSQL server and injects the faults a
// network and a database really produce: a COMMIT that reaches the server
// but whose answer never reaches the client (the outcome is unknown to the
// client, though the server committed), and a database that cannot be
// reached at all.
//
// It can also stand in for a database far away (SetDelay: every packet
// held for a while each way) and counts the round trips clients make
// (RoundTrips), for measuring how many a request waits for.
//
// It reads the frontend protocol stream to find COMMIT: a simple query
// ('Q', which is how pgx commits) or an extended-protocol statement ('P'
// whose text is COMMIT, then 'B' and 'E'). It answers SSLRequest and
// GSSENCRequest with 'N' itself, so a client that would use TLS falls back
// to plain text (one that requires it cannot connect through the proxy).
package faultproxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// mode is what the proxy does to the traffic.
type mode int

const (
	pass        mode = iota // forward everything
	cutAtCommit             // forward a COMMIT, then cut its connection before the answer
	refuse                  // cut every connection, close new ones at once
)

// drainTimeout bounds how long a cut waits for the server to take the
// COMMIT and close its side.
const drainTimeout = 10 * time.Second

// Proxy forwards TCP connections from its address to a target.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	mode  mode
	links map[*link]struct{}

	delay time.Duration // each way, for connections made from now on

	commits    atomic.Int64
	cuts       atomic.Int64
	roundTrips atomic.Int64
	wg         sync.WaitGroup
}

// New starts a proxy on 127.0.0.1 (a port of the system's choosing) to
// target, a host:port.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listening: %w", err)
	}
	p := &Proxy{ln: ln, target: target, links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Through starts a proxy to the PostgreSQL server of dbURL (a URL, not a
// key=value DSN) and returns it with dbURL through it.
func Through(dbURL string) (*Proxy, string, error) {
	u, err := url.Parse(dbURL)
	if err != nil || u.Host == "" {
		return nil, "", fmt.Errorf("faultproxy: %q is not a database URL", redact(dbURL))
	}
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return nil, "", fmt.Errorf("faultproxy: %w", err)
	}
	p, err := New(net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	if err != nil {
		return nil, "", err
	}
	u.Host = p.Addr()
	return p, u.String(), nil
}

// redact drops a URL's password from an error.
func redact(dbURL string) string {
	if u, err := url.Parse(dbURL); err == nil {
		return u.Redacted()
	}
	return "the database URL"
}

// Addr is the proxy's address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// CutAtCommit makes every COMMIT from now on reach the server, and then
// cuts its connection (on both sides) before the server's answer reaches
// the client. The client sees its connection lost during COMMIT only once
// the server has processed the COMMIT and closed its side, so a test may
// read what was committed as soon as the client returns.
func (p *Proxy) CutAtCommit() { p.setMode(cutAtCommit) }

// Refuse cuts every open connection and closes every new one as soon as it
// is accepted: the database cannot be reached.
func (p *Proxy) Refuse() {
	p.setMode(refuse)
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

// Pass forwards everything again.
func (p *Proxy) Pass() { p.setMode(pass) }

// SetDelay holds every packet of the connections made from now on for d
// on its way to the server and again on its way back, as a database d
// away would (every round trip then takes at least 2d). The delay is for
// measuring: the faults (CutAtCommit) are for connections without one.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// RoundTrips is how many times clients have waited for the server: each
// simple query, and each Sync of the extended protocol (a statement, or a
// pipeline of them, ends with one and then waits for the answers).
func (p *Proxy) RoundTrips() int64 { return p.roundTrips.Load() }

// Commits is how many COMMITs the proxy has forwarded.
func (p *Proxy) Commits() int { return int(p.commits.Load()) }

// Cuts is how many connections the proxy has cut at a COMMIT.
func (p *Proxy) Cuts() int { return int(p.cuts.Load()) }

// Close stops accepting, cuts every connection and waits for the proxy's
// goroutines.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.Refuse()
	p.wg.Wait()
	return err
}

func (p *Proxy) setMode(m mode) {
	p.mu.Lock()
	p.mode = m
	p.mu.Unlock()
}

func (p *Proxy) currentMode() mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		if p.currentMode() == refuse {
			if tcp, ok := client.(*net.TCPConn); ok {
				_ = tcp.SetLinger(0) // a reset, as from a host that refuses
			}
			_ = client.Close()
			continue
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		l := &link{p: p, client: client, server: server, drained: make(chan struct{})}
		p.mu.Lock()
		p.links[l] = struct{}{}
		delay := p.delay
		p.mu.Unlock()
		l.toServer, l.toClient = l.server, l.client
		if delay > 0 {
			l.toServer = newDelayLine(p, l, l.server, delay)
			l.toClient = newDelayLine(p, l, l.client, delay)
		}
		p.wg.Add(2)
		go l.clientToServer()
		go l.serverToClient()
	}
}

// link is one proxied connection.
type link struct {
	p              *Proxy
	client, server net.Conn
	// toServer and toClient write to server and client, at once or, with
	// a delay, later (see delayLine).
	toServer, toClient io.Writer

	mu sync.Mutex
	// cut stops the server's bytes from reaching the client: set before a
	// COMMIT is forwarded, so that no part of its answer gets through.
	cut     bool
	drained chan struct{} // closed when the server's side has ended
	once    sync.Once
}

func (l *link) close() {
	l.once.Do(func() {
		_ = l.client.Close()
		_ = l.server.Close()
		l.p.mu.Lock()
		delete(l.p.links, l)
		l.p.mu.Unlock()
	})
}

func (l *link) serverToClient() {
	defer l.p.wg.Done()
	defer close(l.drained)
	buf := make([]byte, 32<<10)
	for {
		n, err := l.server.Read(buf)
		if n > 0 {
			l.mu.Lock()
			if !l.cut {
				_, werr := l.toClient.Write(buf[:n])
				if werr != nil {
					err = werr
				}
			}
			l.mu.Unlock()
		}
		if err != nil {
			l.mu.Lock()
			cut := l.cut
			l.mu.Unlock()
			if !cut {
				l.close()
			}
			return
		}
	}
}

func (l *link) clientToServer() {
	defer l.p.wg.Done()
	defer l.close()
	r := bufio.NewReader(l.client)
	if err := l.startup(r); err != nil {
		return
	}
	var (
		statements = map[string]bool{} // prepared statements whose text is COMMIT
		portals    = map[string]bool{} // portals bound to one
		cutting    bool                // such a portal's Execute went through in cutAtCommit mode
	)
	for {
		msg, err := readMessage(r)
		if err != nil {
			return
		}
		cutNow := false
		switch msg[0] {
		case 'Q':
			l.p.roundTrips.Add(1)
			if isCommit(cstring(msg[5:])) {
				l.p.commits.Add(1)
				cutNow = l.blockIfCutting()
			}
		case 'P':
			name, rest := cut(msg[5:])
			statements[name] = isCommit(cstring(rest))
		case 'B':
			portal, rest := cut(msg[5:])
			portals[portal] = statements[cstring(rest)]
		case 'E':
			if portals[cstring(msg[5:])] {
				l.p.commits.Add(1)
				cutting = l.blockIfCutting() || cutting
			}
		case 'S', 'H':
			// The server answers an extended-protocol COMMIT once it
			// reads the Sync (or Flush) after its Execute.
			cutNow = cutting
			if msg[0] == 'S' {
				l.p.roundTrips.Add(1)
			}
		}
		if _, err := l.toServer.Write(msg); err != nil {
			return
		}
		if cutNow {
			l.cutAfterCommit()
			return
		}
	}
}

// blockIfCutting stops the server's bytes from reaching the client, before
// a COMMIT is forwarded, when the proxy cuts at COMMIT; it says whether it
// did.
func (l *link) blockIfCutting() bool {
	if l.p.currentMode() != cutAtCommit {
		return false
	}
	l.mu.Lock()
	l.cut = true
	l.mu.Unlock()
	return true
}

// cutAfterCommit lets the server read the COMMIT and then the end of the
// stream (it commits, then finds the client gone), waits for it to close
// its side, and only then closes the client's: by the time the client
// learns the connection is lost, the commit is done.
func (l *link) cutAfterCommit() {
	if tcp, ok := l.server.(*net.TCPConn); ok {
		_ = tcp.CloseWrite()
	}
	select {
	case <-l.drained:
	case <-time.After(drainTimeout):
	}
	l.p.cuts.Add(1)
	l.close()
}

// startup forwards the untyped startup message, answering requests for
// encryption with 'N' so that the stream stays readable.
func (l *link) startup(r *bufio.Reader) error {
	for {
		var head [8]byte
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return err
		}
		size := binary.BigEndian.Uint32(head[:4])
		code := binary.BigEndian.Uint32(head[4:])
		if size < 8 || size > 1<<20 {
			return errors.New("faultproxy: malformed startup message")
		}
		if code == 80877103 || code == 80877104 { // SSLRequest, GSSENCRequest
			if _, err := l.client.Write([]byte{'N'}); err != nil {
				return err
			}
			continue
		}
		rest := make([]byte, size-8)
		if _, err := io.ReadFull(r, rest); err != nil {
			return err
		}
		if _, err := l.server.Write(append(head[:], rest...)); err != nil {
			return err
		}
		return nil
	}
}

// readMessage reads one typed frontend message: its type, length and body.
func readMessage(r *bufio.Reader) ([]byte, error) {
	head := make([]byte, 5)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(head[1:])
	if size < 4 || size > 1<<30 {
		return nil, errors.New("faultproxy: malformed message")
	}
	msg := make([]byte, 1+size)
	copy(msg, head)
	if _, err := io.ReadFull(r, msg[5:]); err != nil {
		return nil, err
	}
	return msg, nil
}

// cstring is the NUL-terminated string at the start of b.
func cstring(b []byte) string {
	s, _ := cut(b)
	return s
}

// cut splits the NUL-terminated string at the start of b from the rest.
func cut(b []byte) (string, []byte) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:]
		}
	}
	return string(b), nil
}

// isCommit says whether a statement's text ends a transaction by
// committing it: COMMIT or END, with WORK or TRANSACTION, any case.
func isCommit(query string) bool {
	words := strings.Fields(strings.TrimRight(strings.TrimSpace(query), "; \t\n"))
	if len(words) == 0 || len(words) > 2 {
		return false
	}
	if !strings.EqualFold(words[0], "COMMIT") && !strings.EqualFold(words[0], "END") {
		return false
	}
	return len(words) == 1 || strings.EqualFold(words[1], "WORK") || strings.EqualFold(words[1], "TRANSACTION")
}

// delayLine writes what it is given to a connection d later, in order,
// without holding up the writer: packets sent close together arrive close
// together, each d late, as over a long link.
type delayLine struct {
	queue chan delayed
	d     time.Duration
	done  <-chan struct{} // the link's end
}

type delayed struct {
	due time.Time
	b   []byte
}

// delayQueue bounds the packets in flight on one direction of a link.
const delayQueue = 4096

func newDelayLine(p *Proxy, l *link, to net.Conn, d time.Duration) *delayLine {
	dl := &delayLine{queue: make(chan delayed, delayQueue), d: d, done: l.drained}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			select {
			case <-l.drained:
				return
			case item := <-dl.queue:
				time.Sleep(time.Until(item.due))
				if _, err := to.Write(item.b); err != nil {
					l.close()
					return
				}
			}
		}
	}()
	return dl
}

func (dl *delayLine) Write(b []byte) (int, error) {
	select {
	case dl.queue <- delayed{due: time.Now().Add(dl.d), b: slices.Clone(b)}:
		return len(b), nil
	case <-dl.done:
		return 0, net.ErrClosed
	}
}
