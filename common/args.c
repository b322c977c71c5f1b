// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The command line both servers share: NAME [options] SOURCE MOUNTPOINT
 * (or -o source=SOURCE), -o fsname, the read-mode words and what they ask
 * of libfuse-zc, --help and --version.
 */
#include "server.h"
#include "srv.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *srv_name = "fuse-zc";
static const char *srv_version_string = "";
static const char *srv_source_word = "SOURCE";

/* Once, first: the program's name for messages, its version, and what its
 * first argument is called in usage lines (SOURCE, ARCHIVE). */
void srv_init(const char *name, const char *version, const char *source_word)
{
	srv_name = name;
	srv_version_string = version;
	srv_source_word = source_word;
}

/* "NAME: WHAT (usage: ...)" on stderr. */
static void srv_usage_error(const char *what)
{
	fprintf(stderr, "%s: %s (usage: %s [options] %s MOUNTPOINT)\n",
		srv_name, what, srv_name, srv_source_word);
}

/* A fuse_opt proc's part for non-options: keeps the first two, returns
 * what the proc returns (0 taken, 1 keep, -1 error). */
int srv_args_proc(struct srv_args *pa, const char *arg, int key)
{
	if (key != FUSE_OPT_KEY_NONOPT)
		return 1;
	if (pa->nnonopt == 2) {
		pa->too_many = 1;
		return 0;
	}
	pa->nonopt[pa->nnonopt] = strdup(arg);
	if (!pa->nonopt[pa->nnonopt])
		return -1;
	pa->nnonopt++;
	return 0;
}

/*
 * After fuse_opt_parse(): SOURCE moves into *@source (unless -o source=
 * set it: then two is one too many), MOUNTPOINT goes back into @args for
 * fuse_parse_cmdline().  0, or -errno after one line on stderr.
 */
int srv_args_finish(struct srv_args *pa, struct fuse_args *args, char **source)
{
	if (pa->too_many) {
		srv_usage_error("too many arguments");
		return -EINVAL;
	}
	if (pa->nnonopt == 2) {
		if (*source) {
			char word[32];
			size_t i;

			for (i = 0; srv_source_word[i] && i < sizeof(word) - 1; i++)
				word[i] = (char)tolower((unsigned char)srv_source_word[i]);
			word[i] = '\0';
			fprintf(stderr, "%s: %s given twice (argument and -o source=)\n",
				srv_name, word);
			return -EINVAL;
		}
		*source = pa->nonopt[0];
		pa->nonopt[0] = NULL;
	}
	if (pa->nnonopt && fuse_opt_add_arg(args, pa->nonopt[pa->nnonopt - 1]) == -1)
		return -ENOMEM;
	return 0;
}

void srv_args_free(struct srv_args *pa)
{
	free(pa->nonopt[0]);
	free(pa->nonopt[1]);
	pa->nonopt[0] = pa->nonopt[1] = NULL;
}

/* -o fsname=SOURCE with libfuse's option escapes; 0 or -ENOMEM. */
int srv_add_fsname(struct fuse_args *args, const char *source)
{
	size_t len = strlen(source);
	char *opt = malloc(len * 2 + sizeof("-ofsname="));
	char *p;
	int res;

	if (!opt)
		return -ENOMEM;
	p = stpcpy(opt, "-ofsname=");
	for (; *source; source++) {
		if (*source == ',' || *source == '\\')
			*p++ = '\\';
		*p++ = *source;
	}
	*p = '\0';
	res = fuse_opt_add_arg(args, opt);
	free(opt);
	return res == -1 ? -ENOMEM : 0;
}

/* --help: usage, the server's options from its one table, then libfuse's. */
void srv_help(const char *prog, const struct srv_option_doc *docs, size_t ndocs)
{
	printf("usage: %s [options] %s MOUNTPOINT\n"
	       "       %s [options] -o source=%s MOUNTPOINT\n\n",
	       prog, srv_source_word, prog, srv_source_word);
	printf("%s options:\n", srv_name);
	for (size_t i = 0; i < ndocs; i++)
		printf("    -o %-24s %s\n", docs[i].usage, docs[i].help);
	printf("\n");
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

static void srv_version(void)
{
	printf("%s version %s\n", srv_name, srv_version_string);
	printf("libfuse version %s\n", fuse_pkgversion());
	fflush(stdout);
	fuse_lowlevel_version();
}

/*
 * After the server's fuse_opt_parse(): libfuse's command line into @opts,
 * then --help (@help) or --version.  1: go on; 0: done (exit 0); -1: a
 * bad command line, said on stderr (exit 1).  No mountpoint is a bad one,
 * and so is no source when the server says how (@no_source) it is.
 */
int srv_parse_cmdline(struct fuse_args *args, struct fuse_cmdline_opts *opts,
		      void (*help)(const char *prog), const char *prog,
		      const char *no_source)
{
	if (fuse_parse_cmdline(args, opts) != 0)
		return -1;
	if (opts->show_help) {
		help(prog);
		return 0;
	}
	if (opts->show_version) {
		srv_version();
		return 0;
	}
	if (no_source) {
		srv_usage_error(no_source);
		return -1;
	}
	if (!opts->mountpoint) {
		srv_usage_error("no mountpoint");
		return -1;
	}
	return 1;
}

const char *srv_mode_name(int mode)
{
	switch (mode) {
	case SRV_MODE_COPY:
		return "copy";
	case SRV_MODE_SPLICE:
		return "splice";
	case SRV_MODE_ZEROCOPY_REQUIRED:
		return "zerocopy=required";
	default:
		return "zerocopy";
	}
}

/* What a read-mode word asks of libfuse-zc. */
void srv_read_mode_options(int mode, struct fusezc_options *zopts)
{
	switch (mode) {
	case SRV_MODE_COPY:
		zopts->read_mode = FUSEZC_READ_COPY;
		break;
	case SRV_MODE_SPLICE:
		zopts->read_mode = FUSEZC_READ_SPLICE;
		break;
	case SRV_MODE_ZEROCOPY_REQUIRED:
		zopts->zerocopy_required = true;
		/* fall through */
	default:
		zopts->read_mode = FUSEZC_READ_ZEROCOPY;
		break;
	}
}

/* libfuse's loop options: -s is one thread, -o threads=N is -o max_threads=N. */
void srv_thread_options(bool singlethread, unsigned int threads,
			const struct fuse_cmdline_opts *opts,
			struct fusezc_options *zopts)
{
	zopts->max_threads = singlethread ? 1 : threads ? threads : opts->max_threads;
	zopts->max_idle_threads = opts->max_idle_threads;
	zopts->clone_fd = opts->clone_fd;
}
