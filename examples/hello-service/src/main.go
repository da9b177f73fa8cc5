// hello-service: a tiny HTTP responder, the service of kbuild's example
// cluster image. It answers every request with one line naming the host and
// the greeting configured in its environment file (rendered from a template
// at run time). Static, no dependencies: hosts need nothing to run it.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	addr := flag.String("listen", ":8080", "address to listen on")
	flag.Parse()
	host, _ := os.Hostname()
	greeting := os.Getenv("HELLO_GREETING")
	if greeting == "" {
		greeting = "hello"
	}
	cluster := os.Getenv("HELLO_CLUSTER")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from %s (cluster %s)\n", greeting, host, cluster)
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	log.Printf("hello-service listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
