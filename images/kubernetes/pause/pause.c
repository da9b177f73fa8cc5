/*
 * pause: the process that holds a pod sandbox's namespaces.
 *
 * Written for kbuild. It sleeps until SIGINT or SIGTERM (then exits 0) and,
 * because it is PID 1 of a pod that shares its PID namespace, reaps every
 * child that is re-parented to it.  `pause -v` prints the version.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef PAUSE_VERSION
#define PAUSE_VERSION "unknown"
#endif

int main(int argc, char **argv)
{
	sigset_t wanted;
	int sig;

	if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
		printf("pause (kbuild) %s\n", PAUSE_VERSION);
		return 0;
	}
	if (getpid() != 1)
		fprintf(stderr, "pause: warning: not running as PID 1\n");

	sigemptyset(&wanted);
	sigaddset(&wanted, SIGINT);
	sigaddset(&wanted, SIGTERM);
	sigaddset(&wanted, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &wanted, NULL) != 0) {
		perror("pause: sigprocmask");
		return 1;
	}
	for (;;) {
		if (sigwait(&wanted, &sig) != 0)
			continue;
		if (sig == SIGCHLD) {
			/* reap every exited child, never block */
			while (waitpid(-1, NULL, WNOHANG) > 0)
				;
			continue;
		}
		fprintf(stderr, "pause: shutting down on signal %d\n", sig);
		return 0;
	}
}
