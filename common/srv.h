/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Inside common/ only. */
#ifndef FZC_SRV_H
#define FZC_SRV_H

#include "server.h"

extern const char *srv_name;	/* srv_init(): the prefix of every message */

/* args.c */
const char *srv_mode_name(int mode);

/* daemon.c */
int srv_fork_daemon(void);
void srv_init_replied(int error);
int srv_startup_start(void (*after_init)(void *data), void *data,
		      bool daemon, bool keep_stderr, pthread_t *thread);
void srv_startup_stop(pthread_t thread);

/* messages.c */
void srv_lib_log(enum fuse_log_level level, const char *msg, void *data);
void srv_report_error(int err);
int srv_loop_status(int res, struct fusezc_session *zs, bool zerocopy_required);

#endif /* FZC_SRV_H */
