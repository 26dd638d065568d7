// Command etcd is etcd v3's server, built from its Go module (go install is refused for it: replace directives).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
