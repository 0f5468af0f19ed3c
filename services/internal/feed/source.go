package feed

import (
	"context"
	"fmt"
	"regexp"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	"github.com/countymcc/mcc/services/internal/platform/peer"
)

// source is one service's change feed. It is read with a generic client:
// the feed service's own ListEvents and WatchEvents messages, sent on the
// other service's methods. Every service's messages have the same fields
// (proto/contracts checks it), so they are the same on the wire.
type source struct {
	// name is the service's name, as in -target: "directory".
	name string
	// list and watch are the full method names,
	// "/mcc.directory.v1.DirectoryService/ListEvents".
	list, watch string
	conn        grpc.ClientConnInterface
}

// servicePackage matches the packages of MCC services and captures the
// service's name.
var servicePackage = regexp.MustCompile(`^mcc\.([a-z]+)\.v1$`)

// feedMethods are the full method names of every service of files that has
// ListEvents and WatchEvents, by service name.
func feedMethods(files *protoregistry.Files) map[string][2]string {
	out := map[string][2]string{}
	files.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		m := servicePackage.FindStringSubmatch(string(f.Package()))
		if m == nil {
			return true
		}
		for i := 0; i < f.Services().Len(); i++ {
			svc := f.Services().Get(i)
			list, watch := svc.Methods().ByName("ListEvents"), svc.Methods().ByName("WatchEvents")
			if list == nil || watch == nil || !watch.IsStreamingServer() {
				continue
			}
			out[m[1]] = [2]string{
				fmt.Sprintf("/%s/%s", svc.FullName(), list.Name()),
				fmt.Sprintf("/%s/%s", svc.FullName(), watch.Name()),
			}
		}
		return true
	})
	return out
}

// discover returns the sources among the services registered in files
// that this process has a connection to, in name order, and the names of
// those it has none to (not deployed, or no -<name>.addr). A source without
// a connection is left out; readers keep its position as it is.
func discover(files *protoregistry.Files, peers *peer.Peers) (found []*source, missing []string) {
	methods := feedMethods(files)
	names := make([]string, 0, len(methods))
	for name := range methods {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		conn, err := peers.Conn(name)
		if err != nil {
			missing = append(missing, name)
			continue
		}
		found = append(found, &source{name: name, list: methods[name][0], watch: methods[name][1], conn: conn})
	}
	return found, missing
}

// listEvents calls the source's ListEvents.
func (s *source) listEvents(ctx context.Context, after string, pageSize int32) (*feedv1.ListEventsResponse, error) {
	out := &feedv1.ListEventsResponse{}
	if err := s.conn.Invoke(ctx, s.list, &feedv1.ListEventsRequest{After: after, PageSize: pageSize}, out); err != nil {
		return nil, err
	}
	return out, nil
}

// watchEvents opens the source's WatchEvents stream after a cursor.
func (s *source) watchEvents(ctx context.Context, after string) (grpc.ServerStreamingClient[feedv1.WatchEventsResponse], error) {
	stream, err := s.conn.NewStream(ctx, &grpc.StreamDesc{StreamName: "WatchEvents", ServerStreams: true}, s.watch)
	if err != nil {
		return nil, err
	}
	client := &grpc.GenericClientStream[feedv1.WatchEventsRequest, feedv1.WatchEventsResponse]{ClientStream: stream}
	if err := client.SendMsg(&feedv1.WatchEventsRequest{After: after}); err != nil {
		return nil, err
	}
	if err := client.CloseSend(); err != nil {
		return nil, err
	}
	return client, nil
}
