// Package eventfeed reads the change feeds (ListEvents, WatchEvents) of
// other MCC services over their peer connections, with one generic client:
// the feed service's own ListEvents and WatchEvents messages, sent on the
// other service's methods. Every service's messages have the same fields
// (proto/contracts checks it), so they are the same on the wire.
//
// The facility feed merges every service's feed this way; the recognition
// registry follows the centers' feeds with it.
package eventfeed

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

// Source is one service's change feed.
type Source struct {
	// Name is the service's name, as in -target: "directory".
	Name string
	// list and watch are the full method names,
	// "/mcc.directory.v1.DirectoryService/ListEvents".
	list, watch string
	conn        grpc.ClientConnInterface
}

// servicePackage matches the packages of MCC services and captures the
// service's name.
var servicePackage = regexp.MustCompile(`^mcc\.([a-z]+)\.v1$`)

// methods returns the full method names of every service of files that has
// ListEvents and WatchEvents, by service name.
func methods(files *protoregistry.Files) map[string][2]string {
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

// Discover returns the sources among the services registered in files
// that peers has a connection to, in name order, and the names of those it
// has none to (not deployed, or no -<name>.addr). With names given, only
// those services are looked at.
func Discover(files *protoregistry.Files, peers *peer.Peers, names ...string) (found []*Source, missing []string) {
	all := methods(files)
	if len(names) == 0 {
		for name := range all {
			names = append(names, name)
		}
	}
	names = slices.Clone(names)
	slices.Sort(names)
	for _, name := range names {
		m, ok := all[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		conn, err := peers.Conn(name)
		if err != nil {
			missing = append(missing, name)
			continue
		}
		found = append(found, &Source{Name: name, list: m[0], watch: m[1], conn: conn})
	}
	return found, missing
}

// New returns the source of the service name registered in files, read
// over conn. It fails for a service with no feed.
func New(files *protoregistry.Files, name string, conn grpc.ClientConnInterface) (*Source, error) {
	m, ok := methods(files)[name]
	if !ok {
		return nil, fmt.Errorf("eventfeed: no service %q with ListEvents and WatchEvents", name)
	}
	return &Source{Name: name, list: m[0], watch: m[1], conn: conn}, nil
}

// List calls the source's ListEvents.
func (s *Source) List(ctx context.Context, after string, pageSize int32) (*feedv1.ListEventsResponse, error) {
	out := &feedv1.ListEventsResponse{}
	if err := s.conn.Invoke(ctx, s.list, &feedv1.ListEventsRequest{After: after, PageSize: pageSize}, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Watch opens the source's WatchEvents stream after a cursor.
func (s *Source) Watch(ctx context.Context, after string) (grpc.ServerStreamingClient[feedv1.WatchEventsResponse], error) {
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
