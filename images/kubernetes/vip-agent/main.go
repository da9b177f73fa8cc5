// kbuild-vip keeps a virtual IP on a node in front of the cluster's API
// servers: nftables DNAT of VIP:PORT to the masters whose /readyz answers.
//
// The node reaches the API servers through one address that never changes
// (apiserver.cluster.local points at the VIP on nodes), while masters come
// and go. Every --interval the agent reads the backends file (one master
// address per line, kbuild rewrites it when masters join or leave), asks
// each backend's /readyz over HTTPS (TLS not verified: the answer only says
// "alive"; kubelet and kubectl verify the real connection), and when the set
// of healthy backends changed, replaces its own nftables table in one
// transaction:
//
//	table ip kbuild-vip {
//	  chain output      { type nat hook output priority -110; ip daddr VIP tcp dport PORT dnat ... }
//	  chain prerouting  { type nat hook prerouting priority -110; ip daddr VIP tcp dport PORT dnat ... }
//	  chain postrouting { type nat hook postrouting priority 110; ct original ip daddr VIP ... masquerade }
//	}
//
// spreading new connections over the healthy backends (numgen random). With
// no healthy backend it keeps every listed one (fail open). The VIP is a /32
// on lo, so the route lookup for it succeeds on a host without a default
// route. The table is kbuild's own: kube-proxy (iptables or nftables mode)
// never touches it, and the agent touches nothing else. Leaving the agent
// (SIGTERM) keeps the rules; --cleanup removes the table and the address.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

const table = "kbuild-vip"

type config struct {
	vip      string
	port     int
	backends string
	nftRoot  string
	status   string
	interval time.Duration
	timeout  time.Duration
}

type status struct {
	VIP        string    `json:"vip"`
	Port       int       `json:"port"`
	Backends   []string  `json:"backends"`
	Healthy    []string  `json:"healthy"`
	Programmed []string  `json:"programmed"`
	Updated    time.Time `json:"updated"`
}

func main() {
	var c config
	flag.StringVar(&c.vip, "vip", "10.103.97.2", "the virtual IP")
	flag.IntVar(&c.port, "port", 6443, "the port of the VIP and of every backend")
	flag.StringVar(&c.backends, "backends", "/etc/kbuild/vip-backends", "file of backend addresses")
	flag.StringVar(&c.nftRoot, "nft-root", "", "root directory holding usr/sbin/nft (chroot); empty: nft on PATH")
	flag.StringVar(&c.status, "status", "/run/kbuild-vip/status.json", "where the agent writes what it did")
	flag.DurationVar(&c.interval, "interval", time.Second, "time between health checks")
	flag.DurationVar(&c.timeout, "timeout", time.Second, "timeout of one health check")
	once := flag.Bool("once", false, "program the rules once with every backend and exit")
	cleanup := flag.Bool("cleanup", false, "remove the table and the VIP address and exit")
	probe := flag.Bool("probe", false, "ask /readyz through the VIP once; exit 0 when it answers")
	flag.Parse()
	log.SetFlags(0)
	if net.ParseIP(c.vip).To4() == nil {
		log.Fatalf("kbuild-vip: --vip %q is not an IPv4 address", c.vip)
	}
	if *probe {
		url := "https://" + net.JoinHostPort(c.vip, fmt.Sprint(c.port)) + "/readyz"
		resp, err := newClient(c.timeout * 3).Get(url)
		if err != nil {
			log.Fatalf("kbuild-vip: %s: %v", url, err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 400 {
			log.Fatalf("kbuild-vip: %s: %s", url, resp.Status)
		}
		return
	}
	if *cleanup {
		if err := removeAll(c); err != nil {
			log.Fatalf("kbuild-vip: %v", err)
		}
		return
	}
	if *once {
		backends, err := readBackends(c.backends)
		if err == nil {
			err = ensureAddress(c.vip)
		}
		if err == nil {
			err = program(c, backends)
		}
		if err != nil {
			log.Fatalf("kbuild-vip: %v", err)
		}
		writeStatus(c, status{VIP: c.vip, Port: c.port, Backends: backends, Programmed: backends})
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	run(ctx, c)
}

// newClient asks /readyz without verifying TLS: the answer only says "alive";
// kubelet and kubectl verify their own connections.
func newClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // liveness only
			DisableKeepAlives: true,
		},
	}
}

func run(ctx context.Context, c config) {
	client := newClient(c.timeout)
	var programmed []string
	healthyBefore := map[string]bool{}
	for {
		backends, err := readBackends(c.backends)
		if err != nil {
			log.Printf("kbuild-vip: %v", err)
		}
		healthy := check(client, backends, c.port)
		for _, b := range backends {
			if healthy[b] != healthyBefore[b] {
				log.Printf("kbuild-vip: backend %s %s", b, map[bool]string{true: "up", false: "down"}[healthy[b]])
			}
		}
		healthyBefore = healthy
		want := pick(backends, healthy)
		present := tablePresent(c)
		if len(want) > 0 && (!present || !equal(want, programmed)) {
			if err := ensureAddress(c.vip); err != nil {
				log.Printf("kbuild-vip: %v", err)
			}
			if err := program(c, want); err != nil {
				log.Printf("kbuild-vip: %v", err)
			} else {
				programmed = want
				log.Printf("kbuild-vip: %s:%d -> %s", c.vip, c.port, strings.Join(want, ", "))
			}
		}
		writeStatus(c, status{VIP: c.vip, Port: c.port, Backends: backends,
			Healthy: keys(healthy), Programmed: programmed, Updated: time.Now().UTC()})
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.interval):
		}
	}
}

// readBackends reads one IPv4 address per line ("#" starts a comment).
func readBackends(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("backends: %w", err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(strings.SplitN(sc.Text(), "#", 2)[0])
		if line == "" {
			continue
		}
		if ip := net.ParseIP(line); ip == nil || ip.To4() == nil {
			return nil, fmt.Errorf("backends: %q is not an IPv4 address", line)
		}
		out = append(out, line)
	}
	sort.Strings(out)
	return out, nil
}

// check asks every backend's /readyz at once; status < 400 is healthy.
func check(client *http.Client, backends []string, port int) map[string]bool {
	out := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, b := range backends {
		wg.Add(1)
		go func(b string) {
			defer wg.Done()
			url := "https://" + net.JoinHostPort(b, fmt.Sprint(port)) + "/readyz"
			resp, err := client.Get(url)
			ok := err == nil && resp.StatusCode < 400
			if err == nil {
				resp.Body.Close()
			}
			mu.Lock()
			out[b] = ok
			mu.Unlock()
		}(b)
	}
	wg.Wait()
	return out
}

// pick is the healthy backends, or all of them when none is (fail open).
func pick(backends []string, healthy map[string]bool) []string {
	var out []string
	for _, b := range backends {
		if healthy[b] {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		return backends
	}
	return out
}

func ruleset(c config, backends []string) string {
	var m []string
	for i, b := range backends {
		m = append(m, fmt.Sprintf("%d : %s . %d", i, b, c.port))
	}
	target := fmt.Sprintf("numgen random mod %d map { %s }", len(backends), strings.Join(m, ", "))
	rule := fmt.Sprintf("ip daddr %s tcp dport %d dnat ip to %s", c.vip, c.port, target)
	var sb strings.Builder
	fmt.Fprintf(&sb, "table ip %s\ndelete table ip %s\ntable ip %s {\n", table, table, table)
	for _, hook := range []string{"output", "prerouting"} {
		fmt.Fprintf(&sb, "  chain %s {\n    type nat hook %s priority -110; policy accept;\n    %s\n  }\n",
			hook, hook, rule)
	}
	// A local connection to the VIP (an address of lo) leaves with the VIP as
	// its source: masquerade it behind the outgoing interface's address.
	fmt.Fprintf(&sb, "  chain postrouting {\n    type nat hook postrouting priority 110; policy accept;\n"+
		"    ct original ip daddr %s tcp dport %d masquerade\n  }\n", c.vip, c.port)
	sb.WriteString("}\n")
	return sb.String()
}

func nft(c config, stdin string, args ...string) error {
	var cmd *exec.Cmd
	if c.nftRoot != "" {
		cmd = exec.Command("chroot", append([]string{c.nftRoot, "/usr/sbin/nft"}, args...)...)
	} else {
		cmd = exec.Command("nft", args...)
	}
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("nft %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// program replaces the table in one transaction.
func program(c config, backends []string) error {
	if len(backends) == 0 {
		return fmt.Errorf("no backends in %s", c.backends)
	}
	return nft(c, ruleset(c, backends), "-f", "-")
}

func tablePresent(c config) bool {
	return nft(c, "", "list", "table", "ip", table) == nil
}

// ensureAddress puts the VIP on lo as a /32 (once).
func ensureAddress(vip string) error {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return err
	}
	addrs, err := lo.Addrs()
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.Equal(net.ParseIP(vip)) {
			return nil
		}
	}
	if out, err := exec.Command("ip", "addr", "add", vip+"/32", "dev", "lo").CombinedOutput(); err != nil {
		return fmt.Errorf("ip addr add %s/32 dev lo: %v: %s", vip, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func removeAll(c config) error {
	if tablePresent(c) {
		if err := nft(c, "", "delete", "table", "ip", table); err != nil {
			return err
		}
	}
	_ = exec.Command("ip", "addr", "del", c.vip+"/32", "dev", "lo").Run()
	_ = os.Remove(c.status)
	return nil
}

func writeStatus(c config, s status) {
	if s.Backends == nil {
		s.Backends = []string{}
	}
	if s.Healthy == nil {
		s.Healthy = []string{}
	}
	if s.Programmed == nil {
		s.Programmed = []string{}
	}
	data, _ := json.Marshal(s)
	_ = os.MkdirAll(filepath.Dir(c.status), 0o755)
	tmp := c.status + ".tmp"
	if os.WriteFile(tmp, append(data, '\n'), 0o644) == nil {
		_ = os.Rename(tmp, c.status)
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k, v := range m {
		if v {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
