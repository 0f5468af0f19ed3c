package imaging

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/countymcc/mcc/services/internal/store"
)

// PACS is a DICOMweb server, asked with QIDO-RS (DICOM PS3.18 §10.6).
// Only searches are made: the service never reads pixel data.
type PACS struct {
	base   *url.URL
	client *http.Client
}

// NewPACS returns the PACS whose DICOMweb root is rawURL, for example
// Orthanc's `http://127.0.0.1:8042/dicom-web`.
func NewPACS(rawURL string, timeout time.Duration) (*PACS, error) {
	u, err := url.Parse(strings.TrimSuffix(rawURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("-imaging.dicomweb-url: %q is not an http(s) URL", rawURL)
	}
	return &PACS{base: u, client: &http.Client{Timeout: timeout}}, nil
}

// errUnreachable is a PACS that did not answer, or answered with a server
// error. It maps to Unavailable: the request can be retried as it was.
var errUnreachable = fmt.Errorf("the PACS does not answer; nothing was written, retry with the same request_id: %w", store.ErrUnavailable)

// Tags of the DICOM attributes the service reads (PS3.6), as QIDO-RS JSON
// keys.
const (
	tagStudyDate        = "00080020"
	tagModalitiesStudy  = "00080061"
	tagModality         = "00080060"
	tagSOPInstanceUID   = "00080018"
	tagPatientName      = "00100010"
	tagPatientID        = "00100020"
	tagPatientBirthDate = "00100030"
	tagPatientSex       = "00100040"
	tagBodyPart         = "00180015"
	tagStudySeries      = "00201206"
	tagStudyInstances   = "00201208"
)

// study is what the PACS says of a study. Its patient identifiers are
// used to check the match and then kept only sealed.
type study struct {
	patientID, patientName   string
	birthDate, sex           string
	studyDate                string
	modalities, bodyParts    []string
	seriesCount, imagesCount int
}

// Study looks a study up by its UID. It reports false for a study the PACS
// does not have.
func (p *PACS) Study(ctx context.Context, uid string) (study, bool, error) {
	var found []dataset
	q := url.Values{"StudyInstanceUID": {uid}}
	for _, tag := range []string{tagPatientName, tagPatientID, tagPatientBirthDate, tagPatientSex, tagStudyDate, tagModalitiesStudy, tagStudySeries, tagStudyInstances} {
		q.Add("includefield", tag)
	}
	if err := p.search(ctx, "studies", q, &found); err != nil {
		return study{}, false, err
	}
	if len(found) == 0 {
		return study{}, false, nil
	}
	d := found[0]
	s := study{
		patientID: d.text(tagPatientID), patientName: d.personName(tagPatientName),
		birthDate: d.text(tagPatientBirthDate), sex: d.text(tagPatientSex), studyDate: d.text(tagStudyDate),
		modalities: d.texts(tagModalitiesStudy), seriesCount: d.number(tagStudySeries), imagesCount: d.number(tagStudyInstances),
	}
	var series []dataset
	if err := p.search(ctx, "studies/"+url.PathEscape(uid)+"/series", url.Values{"includefield": {tagBodyPart}}, &series); err != nil {
		return study{}, false, err
	}
	for _, se := range series {
		if m := se.text(tagModality); m != "" && !slices.Contains(s.modalities, m) {
			s.modalities = append(s.modalities, m)
		}
		if b := se.text(tagBodyPart); b != "" && !slices.Contains(s.bodyParts, b) {
			s.bodyParts = append(s.bodyParts, b)
		}
	}
	if s.seriesCount == 0 {
		s.seriesCount = len(series)
	}
	return s, true, nil
}

// Instances returns the SOP Instance UIDs of a study's instances.
func (p *PACS) Instances(ctx context.Context, uid string) (map[string]bool, error) {
	var found []dataset
	if err := p.search(ctx, "studies/"+url.PathEscape(uid)+"/instances", url.Values{"includefield": {tagSOPInstanceUID}}, &found); err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(found))
	for _, d := range found {
		out[d.text(tagSOPInstanceUID)] = true
	}
	return out, nil
}

// maxAnswer bounds a QIDO-RS answer read into memory.
const maxAnswer = 32 << 20

// search runs one QIDO-RS query. A study the PACS does not know may come
// back as an empty array, 204 or 404; each is an empty answer.
func (p *PACS) search(ctx context.Context, path string, q url.Values, out *[]dataset) error {
	u := p.base.JoinPath(path)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/dicom+json")
	resp, err := p.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errUnreachable
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotFound:
		return nil
	case resp.StatusCode >= 500:
		return errUnreachable
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("QIDO-RS %s: HTTP %d", path, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return errUnreachable
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("QIDO-RS %s: %w", path, err)
	}
	return nil
}

// dataset is one result of a QIDO-RS search in the DICOM JSON model
// (PS3.18 F.2): attributes by tag, each with its VR and values.
type dataset map[string]struct {
	VR    string            `json:"vr"`
	Value []json.RawMessage `json:"Value"`
}

// texts returns the string values of an attribute.
func (d dataset) texts(tag string) []string {
	var out []string
	for _, raw := range d[tag].Value {
		var s string
		if json.Unmarshal(raw, &s) == nil && s != "" {
			out = append(out, s)
		}
	}
	return out
}

// text returns the first string value of an attribute.
func (d dataset) text(tag string) string {
	if t := d.texts(tag); len(t) > 0 {
		return t[0]
	}
	return ""
}

// number returns the first value of an IS or US attribute, which servers
// send as a JSON number or a string.
func (d dataset) number(tag string) int {
	for _, raw := range d[tag].Value {
		var n json.Number
		if err := json.Unmarshal(raw, &n); err == nil {
			if v, err := strconv.Atoi(n.String()); err == nil {
				return v
			}
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			if v, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
				return v
			}
		}
	}
	return 0
}

// personName returns a PN attribute in the DICOM text form, its groups
// (alphabetic, ideographic, phonetic) joined by "=".
func (d dataset) personName(tag string) string {
	for _, raw := range d[tag].Value {
		var pn struct{ Alphabetic, Ideographic, Phonetic string }
		if err := json.Unmarshal(raw, &pn); err != nil {
			continue
		}
		return strings.TrimRight(pn.Alphabetic+"="+pn.Ideographic+"="+pn.Phonetic, "=")
	}
	return ""
}
