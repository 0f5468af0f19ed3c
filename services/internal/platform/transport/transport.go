// Package transport sets up TLS for MCC's listeners and connections: HTTPS
// on the gateway, and mutual TLS on gRPC between services, when certificate
// files are given. Without them everything is plaintext, which is fine on
// loopback (one process on one machine) and nowhere else.
package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Config names the certificate files of a process.
type Config struct {
	// CertFile and KeyFile are the process's certificate: its server
	// certificate on both ports, and its client certificate when it calls
	// another service.
	CertFile, KeyFile string
	// CAFile is the authority that signs every MCC process's certificate;
	// servers check clients against it, clients check servers.
	CAFile string
	// ClientAuth says whether gRPC clients must present a certificate:
	// "require" (the default: only MCC processes and holders of a
	// certificate of the CA may call) or "none" (TLS without client
	// certificates, for gRPC clients outside the cluster).
	ClientAuth string
}

// RegisterFlags registers the TLS flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.CertFile, "tls.cert", "", "certificate (PEM) of this process; with -tls.key it turns on HTTPS and gRPC over TLS")
	fs.StringVar(&c.KeyFile, "tls.key", "", "private key (PEM) of -tls.cert")
	fs.StringVar(&c.CAFile, "tls.ca", "", "certificate authority (PEM) that signs MCC's certificates; needed with -tls.cert")
	fs.StringVar(&c.ClientAuth, "tls.client-auth", "require", "gRPC client certificates: require (mutual TLS) or none")
}

// Enabled reports whether TLS is configured.
func (c Config) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// Validate checks that the files go together and load.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	if c.CertFile == "" || c.KeyFile == "" || c.CAFile == "" {
		return errors.New("-tls.cert, -tls.key and -tls.ca: give all three, or none")
	}
	if c.ClientAuth != "require" && c.ClientAuth != "none" {
		return fmt.Errorf("-tls.client-auth: must be require or none, not %q", c.ClientAuth)
	}
	_, _, err := c.load()
	return err
}

func (c Config) load() (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("-tls.cert, -tls.key: %w", err)
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("-tls.ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return tls.Certificate{}, nil, fmt.Errorf("-tls.ca: %s holds no certificate", c.CAFile)
	}
	return cert, pool, nil
}

// ServerOption returns the gRPC server option for this configuration: TLS
// (mutual unless -tls.client-auth=none), or nothing for plaintext.
func (c Config) ServerOption() ([]grpc.ServerOption, error) {
	if !c.Enabled() {
		return nil, nil
	}
	cert, pool, err := c.load()
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, MinVersion: tls.VersionTLS12}
	if c.ClientAuth == "require" {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(cfg))}, nil
}

// HTTPConfig returns the TLS configuration of the HTTP server (the REST
// gateway), or nil for plaintext. REST clients are not asked for
// certificates: they authenticate with tokens.
func (c Config) HTTPConfig() (*tls.Config, error) {
	if !c.Enabled() {
		return nil, nil
	}
	cert, _, err := c.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// DialOption returns the transport credentials for calling an MCC process:
// TLS checking the server against -tls.ca, presenting -tls.cert when there
// is one (mutual TLS); plaintext when no CA is given. The command-line tools
// (seed, backup, health, feed tail) use it too, usually with the CA only,
// or with a certificate where the server requires one.
func (c Config) DialOption() (grpc.DialOption, error) {
	if c.CAFile == "" {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("-tls.ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-tls.ca: %s holds no certificate", c.CAFile)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("-tls.cert, -tls.key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}
