// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * From a libfuse session to the end of the run: the daemon, signals, the
 * mount, libfuse-zc's session and loop, the start-up thread, and the
 * unmount, each undone in reverse order on every path.
 */
#include "server.h"
#include "srv.h"

#include <unistd.h>

/* fusezc_options.init_done: on a worker, once. */
static void srv_lib_init_done(struct fusezc_session *zs, int error, void *data)
{
	(void)zs;
	(void)data;
	srv_init_replied(error);
}

/*
 * Serve @se on @mountpoint until unmounted or signalled, with libfuse-zc
 * as @zopts asks (its init_done and log are ours); *@zs is the library's
 * session while the loop runs (the handlers use it), NULL after.  The
 * server's steps in @hooks, each optional, get @data.  Returns the exit
 * status: 0, or 1 after one line on stderr.
 */
int srv_serve(struct fuse_session *se, const char *mountpoint, bool foreground,
	      struct fusezc_options *zopts, struct fusezc_session **zs,
	      const struct srv_hooks *hooks, void *data)
{
	pthread_t startup;
	int ret = 1, res;

	zopts->init_done = srv_lib_init_done;
	zopts->log = srv_lib_log;
	if (!foreground && srv_fork_daemon() != 0)
		return 1;
	if (fuse_set_signal_handlers(se) != 0)
		return 1;
	if (fuse_session_mount(se, mountpoint) != 0)
		goto out_signals;
	res = fusezc_session_new(se, zopts, zs);
	if (res) {
		srv_report_error(res);
		fuse_session_unmount(se);
		goto out_signals;
	}
	res = hooks->before_loop ? hooks->before_loop(data) : 0;
	if (res) {
		srv_report_error(res);
		goto out_zc;
	}
	if (!foreground && chdir("/") == -1)
		goto out_after_loop;
	if (srv_startup_start(hooks->after_init, data, !foreground, hooks->keep_stderr,
			      &startup) != 0)
		goto out_after_loop;

	res = fusezc_session_loop(*zs);
	if (hooks->after_loop)
		hooks->after_loop(data);
	srv_startup_stop(startup);	/* it uses @data: done before that goes */
	ret = srv_loop_status(res, *zs, zopts->zerocopy_required);
	if (hooks->report)
		hooks->report(data);
	goto out_zc;

out_after_loop:
	if (hooks->after_loop)
		hooks->after_loop(data);
out_zc:
	fuse_session_unmount(se);
	fusezc_session_destroy(*zs);
	*zs = NULL;
out_signals:
	fuse_remove_signal_handlers(se);
	return ret;
}
