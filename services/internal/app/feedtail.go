package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
)

// feedTailUsage is the synopsis of `mcc feed tail`.
const feedTailUsage = "usage: mcc feed tail -facility ID [-addr host:port] [-role ROLE] [-after CURSOR] [-data-dir dir]"

// runFeed runs `mcc feed tail`: it prints a facility's feed live, one event
// per line as JSON, for debugging. It mints its own token with the
// community's signing key, like `mcc token`, and reconnects after the last
// event printed when the server goes away.
func runFeed(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 || args[0] != "tail" {
		return errors.New(feedTailUsage)
	}
	var f tokenFlags
	var after string
	var cf clientFlags
	fs := newFlagSet("mcc feed tail", env)
	fs.StringVar(&f.community, "community", "demo", "medical community ID")
	fs.StringVar(&f.facility, "facility", "", "facility ID or resource name whose feed to print (required)")
	fs.StringVar(&f.roles, "role", "clinician", "role of the token: admin prints the whole community's feed")
	fs.StringVar(&f.dataDir, "data-dir", "./data", "data directory holding signing.key")
	fs.StringVar(&f.signingKey, "auth.signing-key", "", "signing key file (default <data-dir>/signing.key)")
	cf.register(fs, "localhost:9090", "gRPC address of the running mcc's feed service")
	fs.StringVar(&after, "after", "", "feed cursor to start after (default: the oldest event kept)")
	if err := parse(fs, args[1:], env); err != nil {
		return err
	}
	if f.facility == "" {
		return errors.New("-facility: required; " + feedTailUsage)
	}
	f.subject, f.ttl = "cli:feed-tail", time.Hour
	conn, err := cf.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := feedv1.NewFeedServiceClient(conn)
	delay := time.Second
	for {
		printed, err := tailOnce(ctx, client, f, &after, env)
		if ctx.Err() != nil {
			return nil
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		default:
			return err
		}
		if printed {
			delay = time.Second
		}
		fmt.Fprintf(env.Stderr, "mcc feed tail: %v; reconnecting in %v\n", status.Convert(err).Message(), delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// tailOnce streams the feed after *after with a fresh token, printing each
// event and moving *after past it, until the stream fails.
func tailOnce(ctx context.Context, client feedv1.FeedServiceClient, f tokenFlags, after *string, env Env) (printed bool, err error) {
	token, err := f.issue()
	if err != nil {
		return false, err
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	stream, err := client.Watch(ctx, &feedv1.WatchRequest{After: *after})
	if err != nil {
		return false, err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return printed, err
		}
		line, err := protojson.Marshal(resp.GetEvent())
		if err != nil {
			return printed, err
		}
		if _, err := fmt.Fprintf(env.Stdout, "%s\n", line); err != nil {
			return printed, err
		}
		*after, printed = resp.GetEvent().GetCursor(), true
	}
}
