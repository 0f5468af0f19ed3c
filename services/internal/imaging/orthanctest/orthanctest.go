// Package orthanctest gives tests a private PACS: it starts Debian's
// Orthanc with its DICOMweb plugin on free loopback ports, with a storage
// directory of the test's own and the repository's configuration
// (testdata/orthanc.json.tmpl), and stops it by its PID when the test ends. Studies
// for it are made with dcmtk's dump2dcm and sent with storescu or a REST
// POST.
//
// Orthanc 1.10 listens on every address and has no option to restrict it,
// so it runs with testdata/bindshim.c, built here with gcc and loaded with
// LD_PRELOAD, which turns its wildcard binds into loopback ones; Start
// checks in /proc/net that it worked. RemoteAccessAllowed is false too.
//
// Without Orthanc, its DICOMweb plugin, gcc or dcmtk the tests skip, loudly,
// unless MCC_TEST_REQUIRE_ORTHANC=1 (set by CI), which makes that a
// failure.
package orthanctest

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/countymcc/mcc/services/internal/freeport"
	"github.com/countymcc/mcc/services/internal/testproc"
)

// Environment variables.
const (
	// EnvRequire, set to 1, turns a missing Orthanc, plugin, gcc or dcmtk
	// into a failure.
	EnvRequire = "MCC_TEST_REQUIRE_ORTHANC"
	// EnvPlugin names the DICOMweb plugin's shared library, where it is not
	// where Debian installs it.
	EnvPlugin = "MCC_TEST_ORTHANC_DICOMWEB_PLUGIN"
)

//go:embed testdata/bindshim.c
var shimSource []byte

//go:embed testdata/orthanc.json.tmpl
var configTemplate string

// pluginPaths are where Debian's orthanc-dicomweb package puts the plugin.
func pluginPaths() []string {
	return []string{"/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so"}
}

// startTimeout bounds how long Orthanc may take to answer.
const startTimeout = 30 * time.Second

// AET is the application entity title of the test PACS.
const AET = "MCCTEST"

// Server is a running private Orthanc.
type Server struct {
	// URL is the REST root, http://127.0.0.1:port.
	URL string
	// DICOMweb is the DICOMweb root, URL + "/dicom-web".
	DICOMweb string
	// DICOMPort is the port of its DICOM listener.
	DICOMPort int

	proc *testproc.Proc
}

// Start returns a private Orthanc for t.
func Start(t testing.TB) *Server {
	t.Helper()
	orthanc := need(t, "Orthanc", func() (string, error) { return exec.LookPath("Orthanc") })
	plugin := need(t, "the DICOMweb plugin (orthanc-dicomweb)", findPlugin)
	gcc := need(t, "gcc", func() (string, error) { return exec.LookPath("gcc") })
	dir := t.TempDir()
	shim := filepath.Join(dir, "bindshim.so")
	src := filepath.Join(dir, "bindshim.c")
	if err := os.WriteFile(src, shimSource, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gcc, "-shared", "-fPIC", "-O2", "-o", shim, src, "-ldl").CombinedOutput(); err != nil {
		t.Fatalf("orthanctest: building the bind shim: %v\n%s", err, out)
	}
	var lastErr error
	for range 3 {
		s, err := launch(t, orthanc, plugin, shim, dir)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("orthanctest: cannot start Orthanc: %v", lastErr)
	return nil
}

// need returns the path find finds, or skips t (fails under
// MCC_TEST_REQUIRE_ORTHANC=1) when it finds none.
func need(t testing.TB, what string, find func() (string, error)) string {
	t.Helper()
	path, err := find()
	if err == nil {
		return path
	}
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("orthanctest: %s not found, and %s=1 requires the Orthanc tests to run", what, EnvRequire)
	}
	msg := fmt.Sprintf("orthanctest: %s not found: SKIPPING the tests against a real PACS. "+
		"Install them with: apt-get install orthanc orthanc-dicomweb dcmtk gcc", what)
	fmt.Fprintf(os.Stderr, "\n*** %s ***\n\n", msg)
	t.Skip(msg)
	return ""
}

func findPlugin() (string, error) {
	paths := pluginPaths()
	if p := os.Getenv(EnvPlugin); p != "" {
		paths = []string{p}
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("none of %v exists", paths)
}

// launch starts Orthanc on two free ports with its storage under dir and
// waits until it answers.
func launch(t testing.TB, orthanc, plugin, shim, dir string) (*Server, error) {
	ports := freeport.Take(t, 2)
	httpPort, dicomPort := ports[0], ports[1]
	storage, err := os.MkdirTemp(dir, "storage-")
	if err != nil {
		return nil, err
	}
	var cfg bytes.Buffer
	err = template.Must(template.New("orthanc").Parse(configTemplate)).Execute(&cfg, map[string]any{
		"Dir": storage, "Plugin": plugin, "HTTPPort": httpPort, "DICOMPort": dicomPort, "AET": AET,
	})
	if err != nil {
		return nil, err
	}
	config := filepath.Join(storage, "orthanc.json")
	if err := os.WriteFile(config, cfg.Bytes(), 0o600); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(storage, "orthanc.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(orthanc, config)
	cmd.Dir = storage
	cmd.Env = append(os.Environ(), "LD_PRELOAD="+shim)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	proc, err := testproc.Start(cmd)
	if err != nil {
		return nil, err
	}
	s := &Server{
		URL: fmt.Sprintf("http://127.0.0.1:%d", httpPort), DICOMPort: dicomPort,
		proc: proc,
	}
	s.DICOMweb = s.URL + "/dicom-web"
	t.Cleanup(s.stop)
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-s.proc.Exited():
			return nil, fmt.Errorf("Orthanc exited at start:\n%s", testproc.Tail(logFile.Name(), 3000))
		default:
		}
		if resp, err := http.Get(s.URL + "/system"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("Orthanc did not answer on %s within %v:\n%s", s.URL, startTimeout, testproc.Tail(logFile.Name(), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, port := range []int{httpPort, dicomPort} {
		if addr, ok := listening(port); ok && addr != "0100007F" {
			s.stop()
			t.Fatalf("orthanctest: Orthanc listens on port %d at %s, not on loopback: the bind shim did not work", port, addr)
		}
	}
	return s, nil
}

// listening returns the local IPv4 address (hex, as /proc/net/tcp shows
// it) a socket listens on at port.
func listening(port int) (string, bool) {
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return "", false
	}
	want := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		// Field 3 is the state; 0A is LISTEN.
		if len(f) > 3 && strings.HasSuffix(f[1], want) && f[3] == "0A" {
			return strings.TrimSuffix(f[1], want), true
		}
	}
	return "", false
}

// stop ends Orthanc by its PID: politely, then by force. Orthanc takes a
// second or two to close its index.
func (s *Server) stop() { s.proc.Stop(15 * time.Second) }

// Stop stops the server now, for a test of a PACS that went away.
func (s *Server) Stop() { s.stop() }

// Post uploads DICOM files with Orthanc's REST API.
func (s *Server) Post(t testing.TB, files ...string) {
	t.Helper()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Post(s.URL+"/instances", "application/dicom", bytes.NewReader(data))
		if err != nil {
			t.Fatalf("orthanctest: POST /instances: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("orthanctest: POST /instances: HTTP %d", resp.StatusCode)
		}
	}
}

// Send sends DICOM files to the server's DICOM port with dcmtk's storescu,
// as a township modality or PACS does (C-STORE). TCP_NODELAY=1 spares each
// C-STORE a delayed-ACK wait of about 100 ms.
func (s *Server) Send(t testing.TB, files ...string) {
	t.Helper()
	bin := need(t, "storescu (dcmtk)", func() (string, error) { return exec.LookPath("storescu") })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"-aet", "TOWNSHIP", "-aec", AET, "127.0.0.1", strconv.Itoa(s.DICOMPort)}, files...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("orthanctest: storescu: %v\n%s", err, out)
	}
}

// Study describes a test study.
type Study struct {
	// UID is the StudyInstanceUID; NewUID makes one.
	UID string
	// PatientID, PatientName (in DICOM form, "BATEER^=巴特尔"), BirthDate
	// (YYYYMMDD) and Sex (M, F) describe the patient.
	PatientID, PatientName, BirthDate, Sex string
	// Modality is DX, CR, CT or MR; BodyPart the body part examined.
	Modality, BodyPart string
	// Date is the study date, YYYYMMDD.
	Date string
	// Series is the number of series, Images the images in each.
	Series, Images int
}

// NewUID returns a new UID under the 2.25 root (a UUID as a decimal).
func NewUID() string {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(err)
	}
	return "2.25." + n.String()
}

// Files writes the study's instances as DICOM files with dump2dcm and
// returns their paths and SOP Instance UIDs.
func (st Study) Files(t testing.TB) (paths, sopUIDs []string) {
	t.Helper()
	bin := need(t, "dump2dcm (dcmtk)", func() (string, error) { return exec.LookPath("dump2dcm") })
	dir := t.TempDir()
	for series := 1; series <= max(st.Series, 1); series++ {
		seriesUID := NewUID()
		for image := 1; image <= max(st.Images, 1); image++ {
			sop := NewUID()
			dump := filepath.Join(dir, fmt.Sprintf("s%d-i%d.dump", series, image))
			out := strings.TrimSuffix(dump, ".dump") + ".dcm"
			if err := os.WriteFile(dump, []byte(st.dump(seriesUID, sop, series, image)), 0o600); err != nil {
				t.Fatal(err)
			}
			if msg, err := exec.Command(bin, "+te", dump, out).CombinedOutput(); err != nil {
				t.Fatalf("orthanctest: dump2dcm: %v\n%s", err, msg)
			}
			paths, sopUIDs = append(paths, out), append(sopUIDs, sop)
		}
	}
	return paths, sopUIDs
}

// dump is one instance as a dcmtk dump: a secondary capture image of 2x2
// pixels with the study's patient, modality and body part.
func (st Study) dump(seriesUID, sopUID string, series, image int) string {
	lines := []string{
		"(0002,0010) UI =LittleEndianExplicit",
		"(0008,0005) CS [ISO_IR 192]",
		"(0008,0016) UI =SecondaryCaptureImageStorage",
		"(0008,0018) UI [" + sopUID + "]",
		"(0008,0020) DA [" + st.Date + "]",
		"(0008,0060) CS [" + st.Modality + "]",
		"(0010,0010) PN [" + st.PatientName + "]",
		"(0010,0020) LO [" + st.PatientID + "]",
		"(0010,0030) DA [" + st.BirthDate + "]",
		"(0010,0040) CS [" + st.Sex + "]",
		"(0018,0015) CS [" + st.BodyPart + "]",
		"(0020,000d) UI [" + st.UID + "]",
		"(0020,000e) UI [" + seriesUID + "]",
		fmt.Sprintf("(0020,0011) IS [%d]", series),
		fmt.Sprintf("(0020,0013) IS [%d]", image),
		"(0028,0002) US 1",
		"(0028,0004) CS [MONOCHROME2]",
		"(0028,0010) US 2",
		"(0028,0011) US 2",
		"(0028,0100) US 8",
		"(0028,0101) US 8",
		"(0028,0102) US 7",
		"(0028,0103) US 0",
		"(7fe0,0010) OB 00\\40\\80\\ff",
	}
	return strings.Join(lines, "\n") + "\n"
}
