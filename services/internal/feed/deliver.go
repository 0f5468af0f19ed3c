package feed

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	"github.com/countymcc/mcc/services/internal/platform/clock"
)

// deliverer POSTs signed notifications to webhook receivers. Every POST is
// bounded by the delivery timeout, connection and TLS included, and every
// connection goes through the guard, after name resolution. Redirects are
// not followed (a 3xx is a failed attempt) and no proxy is used, so the
// guard sees the address that is really called.
type deliverer struct {
	client *http.Client
	guard  guard
	clock  clock.Clock
}

// maxResponseBytes is how much of a receiver's answer is read; the rest is
// dropped with the connection.
const maxResponseBytes = 64 << 10

// newDeliverer builds the one HTTP client of all deliveries: the system's
// certificate authorities plus -feed.webhook-ca-file, TLS 1.2 at least, and
// the guard on every connection.
func newDeliverer(cfg Config, clk clock.Clock) (*deliverer, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("-feed.webhook-ca-file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-feed.webhook-ca-file: no PEM certificate in %s", cfg.CAFile)
		}
	}
	g := guard{allowLoopback: cfg.AllowLoopback}
	dialer := &net.Dialer{Timeout: cfg.DeliveryTimeout, KeepAlive: 30 * time.Second, Control: g.control}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   cfg.DeliveryTimeout,
		ResponseHeaderTimeout: cfg.DeliveryTimeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
	}
	client := &http.Client{
		Transport:     transport,
		Timeout:       cfg.DeliveryTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &deliverer{client: client, guard: g, clock: clk}, nil
}

// post sends n to url, signed with secret, and returns the receiver's HTTP
// status. Anything but 2xx is an error.
func (d *deliverer) post(ctx context.Context, url, secret string, n *feedv1.Notification, attempt int) (int, error) {
	body, err := protojson.Marshal(n)
	if err != nil {
		return 0, fmt.Errorf("encode the notification: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "mcc-webhook/1")
	req.Header.Set(HeaderID, n.GetEvent().GetId())
	req.Header.Set(HeaderSubscription, n.GetSubscription())
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	sign(req, secret, body, d.clock.Now())
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("the receiver answered %s", resp.Status)
	}
	return resp.StatusCode, nil
}

// backoff is the wait before attempt+1: RetryBase doubled per attempt,
// capped at RetryMax, drawn at random between half and all of it, so that
// receivers coming back after an outage are not hit by every subscription
// at the same moment.
func (c Config) backoff(attempt int) time.Duration {
	d := c.RetryMax
	if attempt-1 < 32 {
		if b := c.RetryBase << (attempt - 1); b > 0 && b < d {
			d = b
		}
	}
	return d/2 + rand.N(d/2+1)
}

// logKey is the store key of a delivery log entry at t. Keys sort newest
// first, so the log lists in that order and old entries are a key range.
func logKey(id string, t time.Time) string {
	return fmt.Sprintf("%s%s-%08x", logPrefix(id), invertedTime(t), rand.Uint32())
}

// invertedTime is a fixed-width string that sorts later times first.
func invertedTime(t time.Time) string {
	return fmt.Sprintf("%019d", math.MaxInt64-t.UnixNano())
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// errLeaseLost reports that another process took over a subscription.
var errLeaseLost = errors.New("the subscription's lease is held by another process")

// errMoved reports that the delivery state changed under a worker (another
// process delivered meanwhile); the worker reads it again.
var errMoved = errors.New("the subscription's delivery state moved")
