package bench

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
)

// pacs answers the QIDO-RS searches the imaging service makes before it
// accepts a reading request, for the mcc the tool starts: every study
// exists, is a two-image chest film of the bench patient (巴特尔). A real
// PACS (Orthanc) is what the e2e tests use; here it would measure the PACS.
type pacs struct {
	url string
	srv *http.Server
}

func startPACS() (*pacs, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	attr := func(vr string, v ...any) map[string]any { return map[string]any{"vr": vr, "Value": v} }
	study := []map[string]any{{
		"00100010": attr("PN", map[string]string{"Alphabetic": "巴特尔"}),
		"00100020": attr("LO", "BENCH-1"),
		"00080020": attr("DA", "20261123"),
		"00080061": attr("CS", "DX"),
		"00201206": attr("IS", 1),
		"00201208": attr("IS", 2),
	}}
	series := []map[string]any{{"00080060": attr("CS", "DX"), "00180015": attr("CS", "CHEST")}}
	studyJSON, _ := json.Marshal(study)
	seriesJSON, _ := json.Marshal(series)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /dicom-web/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/dicom+json")
		if strings.HasSuffix(r.URL.Path, "/series") {
			w.Write(seriesJSON)
			return
		}
		w.Write(studyJSON)
	})
	p := &pacs{url: "http://" + l.Addr().String() + "/dicom-web", srv: &http.Server{Handler: mux}}
	go p.srv.Serve(l)
	return p, nil
}

func (p *pacs) close() { p.srv.Close() }
