/* reaper: makes itself a child subreaper, then execs the given command.
 *
 * PR_SET_CHILD_SUBREAPER survives execve, so the benchmark harness that runs
 * under it becomes the parent of every server it starts, even of daemons that
 * double-fork and of old processes that outlive their own parent during an
 * upgrade. The harness can then find them (as its children), stop them by
 * pid, and reap them at once instead of leaving them to init.
 *
 *   reaper COMMAND [ARGS...]
 */
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: reaper COMMAND [ARGS...]\n");
        return 2;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        perror("reaper: prctl(PR_SET_CHILD_SUBREAPER)");
    execvp(argv[1], argv + 1);
    perror(argv[1]);
    return 127;
}
