package directory

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	"github.com/countymcc/mcc/services/internal/platform/auth"
)

// PollRevocations keeps list equal to the directory's revocations in force,
// reading them every interval over conn (as the service, with asService
// giving the context) until ctx ends. A failed read keeps the previous list
// and is retried at the next round: revocations only ever grow while in
// force, so the last list read is never too lenient by more than the
// revocations made since.
func PollRevocations(ctx context.Context, conn grpc.ClientConnInterface, asService func(context.Context) (context.Context, error), list *auth.RevocationList, interval time.Duration, logger *slog.Logger) error {
	client := directoryv1.NewDirectoryServiceClient(conn)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if err := refreshRevocations(ctx, client, asService, list); err != nil && ctx.Err() == nil {
			logger.WarnContext(ctx, "reading revocations from the directory", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func refreshRevocations(ctx context.Context, client directoryv1.DirectoryServiceClient, asService func(context.Context) (context.Context, error), list *auth.RevocationList) error {
	ctx, err := asService(ctx)
	if err != nil {
		return err
	}
	clients, tokens := map[string]time.Time{}, map[string]bool{}
	for token := ""; ; {
		resp, err := client.ListRevocations(ctx, &directoryv1.ListRevocationsRequest{PageSize: 10000, PageToken: token})
		if err != nil {
			return err
		}
		for _, r := range resp.GetRevocations() {
			if r.GetClientId() != "" {
				clients[r.GetClientId()] = r.GetRevokeTime().AsTime()
			}
			if r.GetTokenId() != "" {
				tokens[r.GetCommunity()+"/"+r.GetTokenId()] = true
			}
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	list.Replace(clients, tokens)
	return nil
}
