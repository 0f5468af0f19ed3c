package pii

import (
	"bytes"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealOpen(t *testing.T) {
	p, err := LoadProtector(filepath.Join(t.TempDir(), "pii.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := p.Seal("110105194912310021", "patients/a/resident_id")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("19491231")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	got, err := p.Open(sealed, "patients/a/resident_id")
	if err != nil || got != "110105194912310021" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := p.Open(sealed, "patients/b/resident_id"); err == nil {
		t.Error("a ciphertext opened under another record's context")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := p.Open(sealed, "patients/a/resident_id"); err == nil {
		t.Error("a tampered ciphertext opened")
	}
	again, _ := p.Seal("110105194912310021", "patients/a/resident_id")
	if bytes.Equal(again, sealed) {
		t.Error("two seals of one value are equal; the nonce is not random")
	}
}

func TestIndexIsKeyedAndStable(t *testing.T) {
	dir := t.TempDir()
	p1, _ := LoadProtector(filepath.Join(dir, "pii.key"), true)
	p1again, err := LoadProtector(filepath.Join(dir, "pii.key"), false)
	if err != nil {
		t.Fatal(err)
	}
	p2, _ := LoadProtector(filepath.Join(t.TempDir(), "pii.key"), true)
	a := p1.Index("resident_id", "110105194912310021")
	if a != p1again.Index("resident_id", "110105194912310021") {
		t.Error("index changed after reloading the key")
	}
	if a == p2.Index("resident_id", "110105194912310021") {
		t.Error("two keys give the same index")
	}
	if a == p1.Index("health_card", "110105194912310021") {
		t.Error("the kind does not separate indexes")
	}
	if strings.Contains(a, "1949") {
		t.Error("index reveals the value")
	}
}

func TestLoadProtectorWithoutCreate(t *testing.T) {
	if _, err := LoadProtector(filepath.Join(t.TempDir(), "missing.key"), false); err == nil {
		t.Fatal("missing key file accepted")
	}
}

func TestSecretNeverPrints(t *testing.T) {
	var buf bytes.Buffer
	s := Secret("110105194912310021")
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "id", s)
	fmt.Fprintf(&buf, "%v %s", s, s)
	if strings.Contains(buf.String(), "1949") {
		t.Fatalf("secret printed: %s", buf.String())
	}
}
