package app

import (
	"flag"

	"google.golang.org/grpc"

	"github.com/countymcc/mcc/services/internal/platform/transport"
)

// clientFlags say how a command reaches a running mcc: its gRPC address,
// and the CA (and, where mutual TLS is required, the certificate) when it
// serves TLS.
type clientFlags struct {
	addr string
	tls  transport.Config
}

// register registers -addr, with its default and meaning, and the TLS
// flags.
func (c *clientFlags) register(fs *flag.FlagSet, addr, what string) {
	fs.StringVar(&c.addr, "addr", addr, what)
	fs.StringVar(&c.tls.CAFile, "tls.ca", "", "CA of the mcc's certificate, when it serves TLS")
	fs.StringVar(&c.tls.CertFile, "tls.cert", "", "client certificate, when the mcc requires mutual TLS")
	fs.StringVar(&c.tls.KeyFile, "tls.key", "", "private key of -tls.cert")
}

func (c *clientFlags) dial() (*grpc.ClientConn, error) {
	creds, err := c.tls.DialOption()
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(c.addr, creds)
}
