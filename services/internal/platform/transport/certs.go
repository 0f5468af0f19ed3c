package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// DevCerts are the files WriteDevCerts makes.
type DevCerts struct {
	CA, Cert, Key string
}

// WriteDevCerts creates, in dir, a local certificate authority (ca.pem,
// ca.key) and one certificate for every MCC process (mcc.pem, mcc.key),
// valid as server and as client for hosts (DNS names or IP addresses). It is
// for development and for counties without a PKI: the CA key signs
// everything, so keep it off the servers. Existing files are not replaced.
func WriteDevCerts(dir string, hosts []string, now time.Time) (DevCerts, error) {
	out := DevCerts{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "mcc.pem"), Key: filepath.Join(dir, "mcc.key")}
	for _, f := range []string{out.CA, out.Cert, out.Key, filepath.Join(dir, "ca.key")} {
		if _, err := os.Stat(f); err == nil {
			return out, fmt.Errorf("%s exists; remove the old certificates first", f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return out, err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return out, err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return out, err
	}
	caSerial, err := serial()
	if err != nil {
		return out, err
	}
	ca := &x509.Certificate{
		SerialNumber:          caSerial,
		Subject:               pkix.Name{CommonName: "MCC local CA", Organization: []string{"MCC"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return out, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return out, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return out, err
	}
	leafSerial, err := serial()
	if err != nil {
		return out, err
	}
	leaf := &x509.Certificate{
		SerialNumber: leafSerial,
		Subject:      pkix.Name{CommonName: "mcc", Organization: []string{"MCC"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, h)
		}
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		return out, err
	}
	caKeyDER, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		return out, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return out, err
	}
	for _, f := range []struct {
		path, kind string
		der        []byte
		mode       os.FileMode
	}{
		{out.CA, "CERTIFICATE", caDER, 0o644},
		{filepath.Join(dir, "ca.key"), "PRIVATE KEY", caKeyDER, 0o600},
		{out.Cert, "CERTIFICATE", leafDER, 0o644},
		{out.Key, "PRIVATE KEY", keyDER, 0o600},
	} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.kind, Bytes: f.der}), f.mode); err != nil {
			return out, err
		}
	}
	return out, nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}
