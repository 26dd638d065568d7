#!/usr/bin/env bash
# Builds the embedded control plane's binaries (etcd, kube-apiserver, kube-controller-manager, kubectl) of the
# pinned releases into a cache outside the repository, once. Prints the directory that holds them.
#   hack/controlplane/build.sh            build what is missing, print the bin directory
#   hack/controlplane/build.sh --print    print the bin directory only (exit 1 when incomplete)
# A half-built binary never lands: each is built to a temporary name and moved into place when complete.
set -euo pipefail
KUBE_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${OPTISCHEMA_CONTROLPLANE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/optischema/controlplane/kube-$KUBE_VERSION-etcd-$ETCD_VERSION}
BIN=$CACHE/bin
want=(etcd kube-apiserver kube-controller-manager kubectl)

complete() { for b in "${want[@]}"; do [ -x "$BIN/$b" ] || return 1; done; }
if [ "${1:-}" = "--print" ]; then complete && echo "$BIN" && exit 0; exit 1; fi
if complete; then echo "$BIN"; exit 0; fi
command -v go >/dev/null || { echo "build.sh: Go is not installed; the embedded control plane cannot be built" >&2; exit 3; }

mkdir -p "$BIN"
exec 9>"$CACHE/.lock"; flock 9   # two builds at once (make test in two shells) wait for each other
rm -f "$BIN"/.*.partial
minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1"
ldflags="$ldflags -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitMinor=$minor"
build() {  # build DIR PACKAGE NAME
  local dir=$1 pkg=$2 name=$3 start=$SECONDS
  [ -x "$BIN/$name" ] && return 0
  echo "building $name ..." >&2
  (cd "$HERE/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$4" -o "$BIN/.$name.partial" "$pkg")
  mv "$BIN/.$name.partial" "$BIN/$name"
  echo "built $name in $((SECONDS - start))s" >&2
}
build etcd . etcd "-s -w"
build kube k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$ldflags"
build kube k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$ldflags"
build kube k8s.io/kubernetes/cmd/kubectl kubectl "$ldflags"
echo "$BIN"
