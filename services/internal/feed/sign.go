package feed

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The headers of every webhook POST. docs/INTEGRATION.md documents them
// for receivers.
const (
	// HeaderID is the event ID; a receiver de-duplicates by it.
	HeaderID = "MCC-Webhook-Id"
	// HeaderTimestamp is when the POST was signed, in Unix seconds.
	HeaderTimestamp = "MCC-Webhook-Timestamp"
	// HeaderSignature is "v1=" and the hex HMAC-SHA256, keyed with the
	// subscription's secret, of the timestamp, a ".", and the body.
	HeaderSignature = "MCC-Webhook-Signature"
	// HeaderSubscription is the subscription's resource name.
	HeaderSubscription = "MCC-Webhook-Subscription"
	// HeaderAttempt counts the attempts for this event, from 1.
	HeaderAttempt = "MCC-Webhook-Attempt"
)

// ReplayTolerance is how old a signed timestamp receivers should accept.
const ReplayTolerance = 5 * time.Minute

// secretPrefix marks webhook secrets, so one found in a config file is
// recognisable.
const secretPrefix = "whsec_"

// newSecret returns a fresh random secret.
func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return secretPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// Sign returns the HeaderSignature value of body signed at ts (Unix
// seconds) with secret. The key is the secret exactly as shown, prefix
// included.
func Sign(secret string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(ts, 10)))
	mac.Write([]byte("."))
	mac.Write(body)
	return "v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Errors of Verify.
var (
	// ErrBadSignature is a signature that does not match the body.
	ErrBadSignature = errors.New("webhook signature does not match")
	// ErrStale is a signed timestamp outside the tolerance: a replay, or a
	// clock far off.
	ErrStale = errors.New("webhook timestamp outside the tolerance")
)

// Verify checks a webhook POST the way a receiver should: its timestamp is
// within tolerance of now, and one of its v1 signatures is the body's,
// compared in constant time.
func Verify(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	ts, err := strconv.ParseInt(h.Get(HeaderTimestamp), 10, 64)
	if err != nil {
		return fmt.Errorf("%s: %w", HeaderTimestamp, ErrBadSignature)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	want := Sign(secret, ts, body)
	for _, sig := range strings.Fields(h.Get(HeaderSignature)) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return ErrBadSignature
}

// sign sets the signature headers of a POST of body at now.
func sign(req *http.Request, secret string, body []byte, now time.Time) {
	ts := now.Unix()
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(secret, ts, body))
}
