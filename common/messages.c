// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Messages: libfuse's log to stderr; libfuse-zc's notes to stderr with -d
 * or -o stats, otherwise its last error kept for main's one line; how the
 * loop ended; the read mode in use.
 */
#include "server.h"
#include "srv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static bool srv_verbose;
static pthread_mutex_t srv_lib_error_lock = PTHREAD_MUTEX_INITIALIZER;
static char srv_lib_error[256];	/* srv_lib_error_lock: workers log */

static void srv_log(enum fuse_log_level level, const char *fmt, va_list ap)
{
	(void)level;
	vfprintf(stderr, fmt, ap);
}

/* @verbose: -d or -o stats. */
void srv_log_init(bool verbose)
{
	srv_verbose = verbose;
	fuse_set_log_func(srv_log);
}

/* fusezc_options.log: the library's messages, without prefix or newline. */
void srv_lib_log(enum fuse_log_level level, const char *msg, void *data)
{
	(void)data;
	if (srv_verbose)
		fprintf(stderr, "fuse-zc: %s\n", msg);
	else if (level <= FUSE_LOG_ERR) {
		pthread_mutex_lock(&srv_lib_error_lock);
		snprintf(srv_lib_error, sizeof(srv_lib_error), "%s", msg);
		pthread_mutex_unlock(&srv_lib_error_lock);
	}
}

/* One line for -@err: the library's last error if it said one. */
void srv_report_error(int err)
{
	char msg[sizeof(srv_lib_error)];
	size_t n;

	pthread_mutex_lock(&srv_lib_error_lock);
	memcpy(msg, srv_lib_error, sizeof(msg));
	pthread_mutex_unlock(&srv_lib_error_lock);
	n = strlen(msg);
	if (n && msg[n - 1] == '\n')
		msg[n - 1] = '\0';
	fprintf(stderr, "%s: %s\n", srv_name, *msg ? msg : strerror(-err));
}

/* fusezc_session_loop()'s result as the exit status, said in one line
 * when it is a failure. */
int srv_loop_status(int res, struct fusezc_session *zs, bool zerocopy_required)
{
	if (res == -EOPNOTSUPP && zerocopy_required) {
		const char *why = fusezc_zerocopy_status(zs);

		fprintf(stderr, "%s: zero copy required but not available: %s\n",
			srv_name, why && *why ? why : "the kernel does not offer it");
		return 1;
	}
	if (res < 0) {
		srv_report_error(res);
		return 1;
	}
	return 0;	/* unmounted, or a signal number: a clean stop */
}

/* -d or -o stats, at exit: the read mode that served. */
void srv_print_read_mode(struct fusezc_session *zs, int mode)
{
	const char *reason = fusezc_zerocopy_status(zs);

	if (mode == SRV_MODE_COPY || mode == SRV_MODE_SPLICE)
		fprintf(stderr, "%s: read mode %s\n", srv_name, srv_mode_name(mode));
	else if (fusezc_zerocopy_active(zs))
		fprintf(stderr, "%s: read mode zerocopy (active)\n", srv_name);
	else
		fprintf(stderr, "%s: read mode zerocopy unavailable (%s), falling "
			"back to splice\n", srv_name, reason && *reason ? reason :
			"not offered by the kernel");
}
