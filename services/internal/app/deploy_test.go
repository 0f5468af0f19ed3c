package app

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/countymcc/mcc/services/internal/platform/config"
)

// deployDir is the repository's deploy folder, seen from this package.
const deployDir = "../../../deploy"

// flagNames returns every flag of the server and its MCC_* variable.
func flagNames(t *testing.T) (flags map[string]bool, envs map[string]bool) {
	t.Helper()
	var cfg Config
	fs := flag.NewFlagSet("mcc", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	flags, envs = map[string]bool{}, map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		flags[f.Name] = true
		envs[config.EnvName(f.Name)] = true
	})
	return flags, envs
}

// checkArgs checks that args are flags mcc knows, with a known target.
func checkArgs(t *testing.T, where string, args []string, flags map[string]bool) {
	t.Helper()
	for _, a := range args {
		name, value, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || !flags[name] {
			t.Errorf("%s: %q is not a flag of mcc", where, a)
			continue
		}
		if name == "target" {
			for _, target := range strings.Split(value, ",") {
				if target != "all" && !slices.Contains(targetNames(), target) {
					t.Errorf("%s: unknown target %q", where, target)
				}
			}
		}
	}
}

// checkEnv checks that every MCC_ variable is one mcc reads.
func checkEnv(t *testing.T, where, name string, envs map[string]bool) {
	t.Helper()
	if strings.HasPrefix(name, "MCC_") && !envs[name] {
		t.Errorf("%s: %s is not the variable of any mcc flag", where, name)
	}
}

// render builds an overlay with the kustomize API and decodes every object
// strictly with client-go's scheme: an unknown field or a wrong type fails.
func render(t *testing.T, root, overlay string) []runtime.Object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(root, "k8s", "overlays", overlay))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", overlay, err)
	}
	strict := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme, json.SerializerOptions{Yaml: true, Strict: true})
	var objs []runtime.Object
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, _, err := strict.Decode(y, nil, nil)
		if err != nil {
			t.Errorf("%s: %s %s: %v", overlay, r.GetKind(), r.GetName(), err)
			continue
		}
		objs = append(objs, obj)
	}
	return objs
}

// deployCopy copies deploy/ to a temporary folder and creates the keys the
// manifests read (deploy/k8s/secrets is git-ignored), as an operator would
// with `mcc keys`.
func deployCopy(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	err := os.CopyFS(dst, os.DirFS(deployDir))
	if err != nil {
		t.Fatal(err)
	}
	secrets := filepath.Join(dst, "k8s", "components", "common", "secrets")
	os.RemoveAll(secrets)
	env := Env{Getenv: func(string) string { return "" }, Stdout: io.Discard, Stderr: io.Discard}
	if err := runKeys([]string{"-dir", secrets}, env); err != nil {
		t.Fatal(err)
	}
	tlsDir := filepath.Join(dst, "k8s", "components", "tls", "secrets")
	os.RemoveAll(tlsDir)
	if err := runCerts([]string{"-dir", tlsDir}, env); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestKubernetesOverlays(t *testing.T) {
	root := deployCopy(t)
	flags, envs := flagNames(t)
	for _, overlay := range []string{"single", "scaled"} {
		t.Run(overlay, func(t *testing.T) {
			objs := render(t, root, overlay)
			targets := map[string]bool{}
			for _, obj := range objs {
				switch o := obj.(type) {
				case *corev1.ConfigMap:
					for name := range o.Data {
						checkEnv(t, "ConfigMap "+o.Name, name, envs)
					}
				case *appsv1.Deployment:
					checkDeployment(t, o, flags, envs)
					for _, a := range o.Spec.Template.Spec.Containers[0].Args {
						if v, ok := strings.CutPrefix(a, "-target="); ok {
							targets[v] = true
						}
					}
				}
			}
			switch overlay {
			case "single":
				if len(targets) != 1 || !targets["all"] {
					t.Errorf("single runs targets %v, want only all", targets)
				}
				for _, obj := range objs {
					if d, ok := obj.(*appsv1.Deployment); ok {
						mem := d.Spec.Template.Spec.Containers[0].Resources.Limits.Memory()
						if mem.Value() < 512<<20 || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
							t.Errorf("single: memory %v, %d replicas, %s strategy; want 512Mi, 1, Recreate", mem, *d.Spec.Replicas, d.Spec.Strategy.Type)
						}
					}
				}
			case "scaled":
				// TLS is on, so every HTTP probe must speak HTTPS.
				for _, obj := range objs {
					if d, ok := obj.(*appsv1.Deployment); ok {
						c := d.Spec.Template.Spec.Containers[0]
						for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
							if p != nil && p.HTTPGet != nil && p.HTTPGet.Scheme != corev1.URISchemeHTTPS {
								t.Errorf("%s: an HTTP probe without HTTPS while TLS is on", d.Name)
							}
						}
					}
				}
				for _, want := range targetNames() {
					if !targets[want] {
						t.Errorf("scaled has no Deployment for target %s", want)
					}
				}
			}
		})
	}
}

// checkDeployment checks what every MCC pod must have.
func checkDeployment(t *testing.T, d *appsv1.Deployment, flags, envs map[string]bool) {
	t.Helper()
	spec := d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers", d.Name, len(spec.Containers))
	}
	c := spec.Containers[0]
	where := "Deployment " + d.Name
	checkArgs(t, where, c.Args, flags)
	for _, e := range c.Env {
		checkEnv(t, where, e.Name, envs)
	}
	sc := c.SecurityContext
	if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot ||
		sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: not locked down (non-root, read-only root, no privilege escalation)", where)
	}
	if c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Errorf("%s: missing readiness or liveness probe", where)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: missing resource requests or limits", where)
	}
	mounted := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounted[m.MountPath] = true
	}
	if !mounted["/keys"] {
		t.Errorf("%s: the keys are not mounted at /keys", where)
	}
	if slices.Contains(c.Args, "-store=bolt") && !mounted["/data"] {
		t.Errorf("%s: the embedded store has no volume at /data", where)
	}
}

// compose is the part of a compose file the test reads.
type compose struct {
	XMCC struct {
		Environment map[string]string `json:"environment"`
	} `json:"x-mcc"`
	Services map[string]struct {
		Image       string            `json:"image"`
		Command     []string          `json:"command"`
		Environment map[string]string `json:"environment"`
	} `json:"services"`
}

func TestComposeFiles(t *testing.T) {
	flags, envs := flagNames(t)
	for _, file := range []string{"all-in-one.yaml", "split.yaml"} {
		t.Run(file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(deployDir, "compose", file))
			if err != nil {
				t.Fatal(err)
			}
			// Anchors and merge keys (x-mcc) are resolved by the parser.
			var c compose
			if err := yaml.Unmarshal(data, &c); err != nil {
				t.Fatal(err)
			}
			targets := map[string]bool{}
			for name, svc := range c.Services {
				if svc.Image != "mcc:latest" {
					continue
				}
				for env := range svc.Environment {
					checkEnv(t, name, env, envs)
				}
				if len(svc.Command) > 0 && !strings.HasPrefix(svc.Command[0], "-") {
					continue // a subcommand: keys, token
				}
				checkArgs(t, name, svc.Command, flags)
				for _, a := range svc.Command {
					if v, ok := strings.CutPrefix(a, "-target="); ok {
						targets[v] = true
					}
				}
			}
			for env := range c.XMCC.Environment {
				checkEnv(t, "x-mcc", env, envs)
			}
			if file == "split.yaml" {
				for _, want := range targetNames() {
					if !targets[want] {
						t.Errorf("split.yaml has no container for target %s", want)
					}
				}
			}
		})
	}
}
