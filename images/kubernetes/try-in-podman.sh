#!/usr/bin/env bash
# Experiment harness (not part of kbuild): bring up a one-node kubeadm cluster
# inside a podman "host" container from the binaries build-from-source.sh
# cached, with every image served by a local registry, to find out what it
# takes to run Kubernetes on this machine. Findings: docs/kubernetes.md.
#
#   try-in-podman.sh images   build the OCI images into a registry storage dir
#   try-in-podman.sh up       network + host container, install binaries/config
#   try-in-podman.sh init     kubeadm init + network add-on inside the host
#   try-in-podman.sh join     kubeadm join of the other hosts (HOSTS="m0 n1 ...")
#   try-in-podman.sh down     remove everything `up` created (by recorded ID)
#
# State (IDs, registry storage, logs) lives in ${EXP:-/var/tmp/k8s-exp}.
# Traffic: the host container reaches only its own podman network; images are
# pulled by its containerd from a registry on its own 127.0.0.1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "${HERE}/versions.env"
K8S=${K8S:-${KUBERNETES_VERSION}}
CACHE=${KBUILD_K8S_CACHE:-/var/cache/kbuild/kubernetes}/${K8S}
BIN=${CACHE}/bin
# shellcheck disable=SC1091
. "${CACHE}/versions"
EXP=${EXP:-/var/tmp/k8s-exp}
HOST_IMAGE=${HOST_IMAGE:-localhost/kbuild-host:bookworm-d3f37f79dcde}
STATE=${EXP}/state
REG=${EXP}/registry
PORT=${PORT:-5055}
mkdir -p "${STATE}"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- images -----
# build_image REF ENTRYPOINT_JSON SRC:DST...
build_image() {
	local ref=$1 ep=$2 ctr
	shift 2
	ctr=$(buildah from scratch)
	local pair
	for pair in "$@"; do
		buildah copy --quiet "${ctr}" "${pair%%:*}" "${pair#*:}" >/dev/null
	done
	buildah config --entrypoint "${ep}" --cmd '' \
		--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--os linux --arch amd64 "${ctr}"
	buildah commit --quiet --format oci --tls-verify=false "${ctr}" "docker://127.0.0.1:${PORT}/${ref}" >/dev/null
	buildah rm "${ctr}" >/dev/null
	log "image ${ref}"
}

cmd_images() {
	rm -rf "${REG}" "${EXP}/img"
	mkdir -p "${REG}" "${EXP}/img"
	cat >"${EXP}/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: ${REG}}}
http: {addr: 127.0.0.1:${PORT}}
EOF
	"${BIN}/registry" serve "${EXP}/registry.yml" >"${EXP}/registry.log" 2>&1 &
	local rpid=$!
	trap 'kill "${rpid}" 2>/dev/null || true; wait "${rpid}" 2>/dev/null || true' RETURN
	for _ in $(seq 50); do
		curl -fsS "http://127.0.0.1:${PORT}/v2/" >/dev/null 2>&1 && break
		sleep 0.1
	done
	"${HERE}/netfilter-userland.sh" "${EXP}/img/nf" >/dev/null
	local b
	for b in kube-apiserver kube-controller-manager kube-scheduler; do
		build_image "${b}:${K8S}" "[\"/usr/local/bin/${b}\"]" "${BIN}/${b}:/usr/local/bin/${b}"
	done
	build_image "kube-proxy:${K8S}" '["/usr/local/bin/kube-proxy"]' "${EXP}/img/nf:/" "${BIN}/kube-proxy:/usr/local/bin/kube-proxy"
	build_image "etcd:${ETCD_IMAGE_TAG}" '["/usr/local/bin/etcd"]' "${BIN}/etcd:/usr/local/bin/etcd" "${BIN}/etcdctl:/usr/local/bin/etcdctl"
	build_image "coredns/coredns:${COREDNS_VERSION}" '["/coredns"]' "${BIN}/coredns:/coredns"
	build_image "pause:${PAUSE_VERSION}" '["/pause"]' "${BIN}/pause:/pause"
	build_image "flannel/flannel:${FLANNEL_VERSION}" '["/opt/bin/flanneld"]' "${EXP}/img/nf:/" "${BIN}/flanneld:/opt/bin/flanneld" "${BIN}/cni/flannel:/opt/cni/flannel"
	du -sh "${REG}"
}

# ------------------------------------------------------------------- up ------
# Hosts: ${HOSTS:-m0} (first = master, runs the registry). INTERNAL=1 (default)
# makes the podman network --internal: no route beyond its own subnet.
CUR=""
hx() { podman exec -i "${CUR}" "$@"; }

start_host() {
	local name=$1 net=$2 ctr ip
	mkdir -p "${EXP}/${name}-containerd"
	ctr=$(podman run -d --privileged "--cgroupns=${CGROUPNS:-private}" --ulimit nofile=16384:16384 --ulimit nproc=32768:32768 \
		--network "${net}" --hostname "${name}" \
		-v "${EXP}/${name}-containerd:/var/lib/containerd" \
		"${HOST_IMAGE}" /sbin/init)
	echo "${ctr}" >"${STATE}/ctr.${name}"
	ip=$(podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "${ctr}")
	echo "${ip}" >"${STATE}/ip.${name}"
	log "host ${name} ${ctr:0:12} on ${net} at ${ip}"
}

install_host() {
	local name=$1 master_ip=$2 is_master=$3
	CUR=$(cat "${STATE}/ctr.${name}")
	for _ in $(seq 60); do hx systemctl is-system-running 2>/dev/null | grep -qE 'running|degraded' && break; sleep 1; done
	hx mkdir -p /usr/local/bin /opt/cni/bin /etc/containerd/certs.d/_default /etc/cni/net.d /var/lib/kbuild-registry /etc/kbuild
	local b
	for b in kubeadm kubelet kubectl containerd containerd-shim-runc-v2 ctr runc crictl registry etcdctl; do
		podman cp "${BIN}/${b}" "${CUR}:/usr/local/bin/${b}"
	done
	for b in "${BIN}"/cni/*; do podman cp "${b}" "${CUR}:/opt/cni/bin/"; done
	podman cp "${HERE}/etc/cni/net.d/10-flannel.conflist" "${CUR}:/etc/cni/net.d/10-flannel.conflist"
	local scheme=http tls=""
	if [[ ${REGISTRY_TLS:-1} == 1 ]]; then
		scheme=https
		podman cp "${EXP}/tls/ca.crt" "${CUR}:/etc/containerd/certs.d/_default/ca.crt"
		tls=", tls: {certificate: /etc/kbuild/registry.crt, key: /etc/kbuild/registry.key}"
	fi
	if [[ ${is_master} == 1 ]]; then
		podman cp "${REG}/." "${CUR}:/var/lib/kbuild-registry/"
		if [[ -n ${tls} ]]; then
			podman cp "${EXP}/tls/registry.crt" "${CUR}:/etc/kbuild/registry.crt"
			podman cp "${EXP}/tls/registry.key" "${CUR}:/etc/kbuild/registry.key"
		fi
		hx sh -c "cat >/etc/kbuild/registry.yml" <<EOF
version: 0.1
log: {level: info}
storage: {filesystem: {rootdirectory: /var/lib/kbuild-registry}, delete: {enabled: false}}
http: {addr: ":5000"${tls}}
EOF
		hx sh -c "cat >/etc/systemd/system/kbuild-registry.service" <<'EOF'
[Unit]
Description=kbuild embedded registry
[Service]
ExecStart=/usr/local/bin/registry serve /etc/kbuild/registry.yml
Restart=always
[Install]
WantedBy=multi-user.target
EOF
	fi
	hx sh -c "cat >/etc/containerd/config.toml" <<EOF
version = 3
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = 'registry.k8s.io/pause:${PAUSE_VERSION}'
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = '/etc/containerd/certs.d'
[plugins.'io.containerd.cri.v1.runtime']
  # no CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj below its own
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '/usr/local/bin/runc'
        SystemdCgroup = ${SYSTEMD_CGROUP:-false}
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/opt/cni/bin']
    conf_dir = '/etc/cni/net.d'
EOF
	# every registry (docker.io, registry.k8s.io, quay.io, ...) -> the local one
	hx sh -c "cat >/etc/containerd/certs.d/_default/hosts.toml" <<EOF
server = "${scheme}://sea.hub:5000"
[host."${scheme}://sea.hub:5000"]
  capabilities = ["pull", "resolve"]
$([[ ${scheme} == https ]] && echo '  ca = "/etc/containerd/certs.d/_default/ca.crt"')
EOF
	hx sh -c "cat >/etc/systemd/system/containerd.service" <<'EOF'
[Unit]
Description=containerd
After=network.target kbuild-registry.service
[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/local/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
[Install]
WantedBy=multi-user.target
EOF
	hx sh -c "cat >/etc/systemd/system/kubelet.service" <<'EOF'
[Unit]
Description=kubelet
After=containerd.service
[Service]
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
ExecStart=/usr/local/bin/kubelet --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf --config=/var/lib/kubelet/config.yaml $KUBELET_KUBEADM_ARGS
Restart=always
RestartSec=2
[Install]
WantedBy=multi-user.target
EOF
	hx sh -c 'echo "runtime-endpoint: unix:///run/containerd/containerd.sock" >/etc/crictl.yaml'
	hx sh -c "echo '${master_ip} apiserver.cluster.local sea.hub' >>/etc/hosts"
	if [[ ${INTERNAL:-1} == 1 && ${DEFAULT_ROUTE:-1} == 1 ]]; then
		# An --internal network has no default route. kubeadm (bind address),
		# flanneld (default interface) and every hostNetwork client of a
		# ClusterIP (flannel -> 10.96.0.1: "network is unreachable") need one.
		# On-link default: off-subnet packets are ARPed for and go nowhere.
		hx ip route add default dev eth0
	fi
	hx systemctl daemon-reload
	if [[ ${is_master} == 1 ]]; then hx systemctl enable --now kbuild-registry; fi
	hx systemctl enable --now containerd
	hx systemctl enable kubelet
	sleep 2
	hx systemctl is-active containerd
	hx crictl info >/dev/null && log "${name}: containerd CRI up"
}

cmd_up() {
	local net="k8sexp-$$" hosts name master
	read -ra hosts <<<"${HOSTS:-m0}"
	master=${hosts[0]}
	if [[ ${INTERNAL:-1} == 1 ]]; then
		podman network create --internal "${net}" >/dev/null
	else
		podman network create "${net}" >/dev/null
	fi
	echo "${net}" >"${STATE}/net"
	echo "${hosts[*]}" >"${STATE}/hosts"
	if [[ ${REGISTRY_TLS:-1} == 1 ]]; then
		# a CA for the cluster and a server certificate for the registry domain
		rm -rf "${EXP}/tls" && mkdir -p "${EXP}/tls"
		(
			cd "${EXP}/tls"
			openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
				-subj "/CN=kbuild test cluster CA" -keyout ca.key -out ca.crt 2>/dev/null
			openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
				-subj "/CN=sea.hub" -keyout registry.key -out registry.csr 2>/dev/null
			printf 'subjectAltName=DNS:sea.hub\nextendedKeyUsage=serverAuth\n' >ext.cnf
			openssl x509 -req -in registry.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
				-days 365 -extfile ext.cnf -out registry.crt 2>/dev/null
		)
	fi
	for name in "${hosts[@]}"; do start_host "${name}" "${net}"; done
	cp "${STATE}/ctr.${master}" "${STATE}/ctr"
	cp "${STATE}/ip.${master}" "${STATE}/ip"
	for name in "${hosts[@]}"; do
		install_host "${name}" "$(cat "${STATE}/ip.${master}")" "$([[ ${name} == "${master}" ]] && echo 1 || echo 0)"
	done
}

# ----------------------------------------------------------------- init ------
cmd_init() {
	local ip
	ip=$(cat "${STATE}/ip")
	CUR=$(cat "${STATE}/ctr")
	hx sh -c "cat >/etc/kbuild/kubeadm.yaml" <<EOF
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: ${ip}
  bindPort: 6443
nodeRegistration:
  criSocket: unix:///run/containerd/containerd.sock
  imagePullPolicy: IfNotPresent
  ignorePreflightErrors: [${IGNORE_PREFLIGHT:-SystemVerification}]
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: ${K8S}
controlPlaneEndpoint: apiserver.cluster.local:6443
networking:
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: ${CGROUP_DRIVER:-cgroupfs}
failCgroupV1: false
---
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ${PROXY_MODE:-iptables}
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
	hx kubeadm config images list --config /etc/kbuild/kubeadm.yaml
	local start end
	start=$(date +%s)
	# shellcheck disable=SC2086 # KUBEADM_FLAGS is a list of flags
	hx kubeadm init --config /etc/kbuild/kubeadm.yaml ${KUBEADM_FLAGS:-} 2>&1 | tee "${EXP}/kubeadm-init.log"
	end=$(date +%s)
	log "kubeadm init took $((end - start))s"
	sed -e "s|\${POD_CIDR}|10.244.0.0/16|; s|\${FLANNEL_BACKEND}|${FLANNEL_BACKEND:-vxlan}|; s|{{ .FlannelVersion }}|${FLANNEL_VERSION}|" \
		"${HERE}/manifests/kube-flannel.yaml.tmpl" | hx kubectl --kubeconfig /etc/kubernetes/admin.conf apply -f -
}

# ----------------------------------------------------------------- join ------
# Hosts named in ${MASTERS} (besides the first) join as control-plane nodes,
# one at a time; the others as workers.
cmd_join() {
	local hosts name cmd key extra start
	read -ra hosts <<<"$(cat "${STATE}/hosts")"
	CUR=$(cat "${STATE}/ctr")
	for name in "${hosts[@]:1}"; do
		CUR=$(cat "${STATE}/ctr")
		cmd=$(hx kubeadm token create --print-join-command)
		extra=""
		if [[ " ${MASTERS:-} " == *" ${name} "* ]]; then
			key=$(hx kubeadm init phase upload-certs --upload-certs --config /etc/kbuild/kubeadm.yaml | tail -n1)
			extra="--control-plane --certificate-key ${key} --apiserver-advertise-address $(cat "${STATE}/ip.${name}")"
		fi
		CUR=$(cat "${STATE}/ctr.${name}")
		log "joining ${name}${extra:+ as control plane}"
		start=$(date +%s)
		# shellcheck disable=SC2086 # cmd is kubeadm's printed command line
		hx ${cmd} ${extra} --ignore-preflight-errors=SystemVerification --cri-socket unix:///run/containerd/containerd.sock 2>&1 | tail -3
		log "join of ${name} took $(($(date +%s) - start))s"
	done
}

# ----------------------------------------------------------------- down ------
cmd_down() {
	local f
	for f in "${STATE}"/ctr.*; do
		[[ -f ${f} ]] || continue
		podman rm -f -t 5 "$(cat "${f}")" >/dev/null || true
		rm -f "${f}"
	done
	if [[ -f ${STATE}/ctr ]]; then
		podman rm -f -t 5 "$(cat "${STATE}/ctr")" >/dev/null 2>&1 || true
	fi
	rm -f "${STATE}/ctr" "${STATE}/ip" "${STATE}"/ip.* "${STATE}/hosts"
	if [[ -f ${STATE}/net ]]; then
		podman network rm "$(cat "${STATE}/net")" >/dev/null || true
		rm -f "${STATE}/net"
	fi
	rm -rf "${EXP}"/*-containerd
	log "removed host containers and network"
}

case ${1:-} in
	images | up | init | join | down) "cmd_$1" ;;
	*) echo "usage: $0 images|up|init|join|down" >&2; exit 2 ;;
esac
