// Command flannel is a CNI plugin written for kbuild that wires pods to the
// network flanneld manages. flanneld (running with --kube-subnet-mgr) writes
// the node's share of the pod network to a subnet file; this plugin turns
// that file plus the "delegate" section of its own configuration into a
// bridge + host-local configuration and runs the delegate plugin with it.
//
// The delegate configuration of every ADD is saved under dataDir, keyed by
// container ID, so that CHECK and DEL run the delegate with exactly the
// configuration ADD used, even after the subnet file has changed or vanished.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

const (
	defaultSubnetFile = "/run/flannel/subnet.env"
	defaultDataDir    = "/var/lib/cni/flannel"
)

// netConf is this plugin's own configuration.
type netConf struct {
	types.NetConf
	SubnetFile string         `json:"subnetFile"`
	DataDir    string         `json:"dataDir"`
	Delegate   map[string]any `json:"delegate"`
}

// subnetEnv is what flanneld writes to the subnet file.
type subnetEnv struct {
	network *net.IPNet
	subnet  *net.IPNet
	mtu     int
	ipMasq  bool
}

func loadConf(data []byte) (*netConf, error) {
	c := &netConf{SubnetFile: defaultSubnetFile, DataDir: defaultDataDir}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("parse network configuration: %w", err)
	}
	if c.Delegate == nil {
		c.Delegate = map[string]any{}
	}
	return c, nil
}

func readSubnetEnv(path string) (*subnetEnv, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s (is flanneld running on this node?): %w", path, err)
	}
	defer f.Close()
	env := &subnetEnv{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, val, ok := strings.Cut(text, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: expected KEY=VALUE", path, line)
		}
		switch key {
		case "FLANNEL_NETWORK":
			_, env.network, err = net.ParseCIDR(val)
		case "FLANNEL_SUBNET":
			// The subnet is written as the gateway address with the prefix
			// (10.244.1.1/24); keep the network part for IPAM.
			_, env.subnet, err = net.ParseCIDR(val)
		case "FLANNEL_MTU":
			env.mtu, err = strconv.Atoi(val)
		case "FLANNEL_IPMASQ":
			env.ipMasq, err = strconv.ParseBool(val)
		}
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", path, line, key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if env.network == nil || env.subnet == nil {
		return nil, fmt.Errorf("%s: FLANNEL_NETWORK and FLANNEL_SUBNET are required", path)
	}
	return env, nil
}

// delegateConf builds the delegate plugin's configuration: the user's
// "delegate" section, with defaults filled from the subnet file.
func delegateConf(c *netConf, env *subnetEnv) ([]byte, string, error) {
	d := make(map[string]any, len(c.Delegate)+8)
	for k, v := range c.Delegate {
		d[k] = v
	}
	setDefault := func(k string, v any) {
		if _, ok := d[k]; !ok {
			d[k] = v
		}
	}
	setDefault("type", "bridge")
	setDefault("name", c.Name)
	setDefault("cniVersion", c.CNIVersion)
	if d["type"] == "bridge" {
		setDefault("isGateway", true)
	}
	if env.mtu > 0 {
		setDefault("mtu", env.mtu)
	}
	// flanneld masquerades traffic leaving the pod network itself when
	// FLANNEL_IPMASQ is true; the bridge must not do it a second time.
	setDefault("ipMasq", !env.ipMasq)
	if _, ok := d["ipam"]; !ok {
		d["ipam"] = map[string]any{
			"type":   "host-local",
			"ranges": [][]map[string]string{{{"subnet": env.subnet.String()}}},
			"routes": []map[string]string{{"dst": env.network.String()}},
		}
	}
	typ, ok := d["type"].(string)
	if !ok || typ == "" {
		return nil, "", errors.New(`delegate "type" must be a plugin name`)
	}
	b, err := json.Marshal(d)
	return b, typ, err
}

func savedPath(c *netConf, containerID string) string {
	return filepath.Join(c.DataDir, containerID)
}

// save writes the delegate configuration atomically (temp file, fsync, rename).
func save(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func cmdAdd(args *skel.CmdArgs) error {
	c, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	env, err := readSubnetEnv(c.SubnetFile)
	if err != nil {
		return err
	}
	conf, typ, err := delegateConf(c, env)
	if err != nil {
		return err
	}
	if err := save(savedPath(c, args.ContainerID), conf); err != nil {
		return fmt.Errorf("save delegate configuration: %w", err)
	}
	res, err := invoke.DelegateAdd(context.TODO(), typ, conf, nil)
	if err != nil {
		return err
	}
	return types.PrintResult(res, c.CNIVersion)
}

func loadSaved(args *skel.CmdArgs) (*netConf, []byte, string, error) {
	c, err := loadConf(args.StdinData)
	if err != nil {
		return nil, nil, "", err
	}
	conf, err := os.ReadFile(savedPath(c, args.ContainerID))
	if err != nil {
		return c, nil, "", err
	}
	var d struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(conf, &d); err != nil || d.Type == "" {
		return c, nil, "", fmt.Errorf("saved configuration %s is damaged", savedPath(c, args.ContainerID))
	}
	return c, conf, d.Type, nil
}

func cmdDel(args *skel.CmdArgs) error {
	c, conf, typ, err := loadSaved(args)
	if errors.Is(err, os.ErrNotExist) {
		return nil // never added, or already deleted: DEL is idempotent
	}
	if err != nil {
		return err
	}
	if err := invoke.DelegateDel(context.TODO(), typ, conf, nil); err != nil {
		return err
	}
	if err := os.Remove(savedPath(c, args.ContainerID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	_, conf, typ, err := loadSaved(args)
	if err != nil {
		return err
	}
	return invoke.DelegateCheck(context.TODO(), typ, conf, nil)
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck},
		version.All, "flannel CNI plugin (kbuild)")
}
