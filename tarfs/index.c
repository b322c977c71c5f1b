// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * tarfs index: parse the headers of a tar archive (POSIX ustar, GNU long
 * names/link names and base-256 numbers, pax extended and global headers)
 * into struct tarfs_index.  Data blocks are seeked over: one pread() of 512
 * bytes per header, never a read of member data.
 *
 * Every member's data range is checked to lie inside the archive before it
 * is indexed: a reader can never be lent a byte outside the archive, nor
 * past its member's end (tarfs_zc.c clips every read to the member).
 */
#include "index.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define BLOCK 512
/* GNU long names and pax headers are read into memory: a bound. */
#define META_MAX (1U << 20)

struct ustar_header {
	char name[100];
	char mode[8];
	char uid[8];
	char gid[8];
	char size[12];
	char mtime[12];
	char chksum[8];
	char typeflag;
	char linkname[100];
	char magic[6];
	char version[2];
	char uname[32];
	char gname[32];
	char devmajor[8];
	char devminor[8];
	char prefix[155];
	char pad[12];
};

_Static_assert(sizeof(struct ustar_header) == BLOCK, "tar header is one block");
_Static_assert(sizeof(struct tarfs_node) == 72, "tarfs/README.md states 72 bytes a node");

/* pax values (x overrides g overrides the header); has_* say which are set */
struct pax {
	char *path, *linkpath;
	uint64_t size;
	int64_t mtime;
	uint32_t mtime_nsec;
	uint64_t uid, gid;
	bool has_size, has_mtime, has_uid, has_gid;
	bool sparse;
	char *sparse_name;
};

struct parser {
	int fd;
	struct tarfs_index *ix;
	const struct tarfs_index_opts *opts;
	char *err;
	size_t errlen;
	uint64_t pos;
	struct pax global, ext;
	char *longname, *longlink;	/* GNU 'L', 'K' */
};

static int fail(struct parser *p, int errnum, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(p->err, p->errlen, "offset %" PRIu64 ": ", p->pos);
	if (n < 0 || (size_t)n >= p->errlen)
		n = 0;
	va_start(ap, fmt);
	vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -errnum;
}

/* ------------------------------------------------------------------ */
/* Numbers                                                             */

/*
 * A numeric header field: octal (spaces and NULs around it), or GNU
 * base-256 (first byte 0x80: positive, 0xff: negative).  0 or -EINVAL.
 */
static int parse_num(const char *f, size_t len, int64_t *out, bool allow_negative)
{
	const unsigned char *u = (const unsigned char *)f;
	uint64_t v = 0;
	size_t i = 0;

	if (len == 0)
		return -EINVAL;
	if (u[0] == 0x80 || u[0] == 0xff) {
		bool neg = u[0] == 0xff;

		if (neg && !allow_negative)
			return -EINVAL;
		/* at most 63 bits of value */
		for (i = 1; i < len; i++) {
			if (v >> 55)
				return -EINVAL;
			v = (v << 8) | (neg ? (uint8_t)~u[i] : u[i]);
		}
		if (v >> 63)
			return -EINVAL;
		*out = neg ? -(int64_t)v - 1 : (int64_t)v;
		return 0;
	}
	while (i < len && (f[i] == ' ' || f[i] == '\0'))
		i++;
	if (i == len) {
		*out = 0;	/* an empty field: 0, as GNU tar reads it */
		return 0;
	}
	for (; i < len && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 60)
			return -EINVAL;
		v = v * 8 + (uint64_t)(f[i] - '0');
	}
	for (; i < len; i++)
		if (f[i] != ' ' && f[i] != '\0')
			return -EINVAL;
	*out = (int64_t)v;
	return 0;
}

/* A pax decimal: digits only, no sign unless @allow_negative. */
static int parse_dec(const char *s, int64_t *out, bool allow_negative)
{
	bool neg = false;
	uint64_t v = 0;

	if (*s == '-' && allow_negative) {
		neg = true;
		s++;
	}
	if (*s < '0' || *s > '9')
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (v > (UINT64_MAX >> 1) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (v > INT64_MAX)
		return -EINVAL;
	*out = neg ? -(int64_t)v : (int64_t)v;
	return *s == '\0' || *s == '.' ? 0 : -EINVAL;
}

/* pax mtime: seconds[.fraction] */
static int parse_pax_time(const char *s, int64_t *sec, uint32_t *nsec)
{
	const char *dot;
	uint32_t ns = 0;
	int digits = 0;

	if (parse_dec(s, sec, true))
		return -EINVAL;
	dot = strchr(s, '.');
	if (dot) {
		for (dot++; *dot; dot++) {
			if (*dot < '0' || *dot > '9')
				return -EINVAL;
			if (digits < 9) {
				ns = ns * 10 + (uint32_t)(*dot - '0');
				digits++;
			}
		}
		for (; digits < 9; digits++)
			ns *= 10;
		/* -1.5 is 1.5 s before the epoch */
		if (*s == '-' && ns) {
			*sec -= 1;
			ns = 1000000000U - ns;
		}
	}
	*nsec = ns;
	return 0;
}

/* ------------------------------------------------------------------ */
/* The index's tables                                                  */

static int arena_add(struct tarfs_index *ix, const char *s, size_t len, uint32_t *off)
{
	if (ix->arena_len + len + 1 > UINT32_MAX)
		return -EOVERFLOW;
	if (ix->arena_len + len + 1 > ix->arena_cap) {
		size_t cap = ix->arena_cap ? ix->arena_cap : 4096;
		char *a;

		while (cap < ix->arena_len + len + 1)
			cap *= 2;
		a = realloc(ix->arena, cap);
		if (!a)
			return -ENOMEM;
		ix->arena = a;
		ix->arena_cap = cap;
	}
	memcpy(ix->arena + ix->arena_len, s, len);
	ix->arena[ix->arena_len + len] = '\0';
	*off = (uint32_t)ix->arena_len;
	ix->arena_len += len + 1;
	return 0;
}

static uint32_t hash_name(uint32_t parent, const char *name, size_t len)
{
	uint32_t h = 2166136261U ^ parent;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)name[i]) * 16777619U;
	return h;
}

static int rehash(struct tarfs_index *ix, uint32_t nb)
{
	uint32_t *b = malloc(sizeof(*b) * nb);

	if (!b)
		return -ENOMEM;
	for (uint32_t i = 0; i < nb; i++)
		b[i] = TARFS_NONE;
	free(ix->buckets);
	ix->buckets = b;
	ix->nbuckets = nb;
	/* node 0 (the root) is in no directory */
	for (uint32_t n = 1; n < ix->nnodes; n++) {
		const char *name = ix->arena + ix->nodes[n].name;
		uint32_t h = hash_name(ix->nodes[n].parent, name, strlen(name)) & (nb - 1);

		ix->nodes[n].hnext = b[h];
		b[h] = n;
	}
	return 0;
}

static uint32_t lookup_len(const struct tarfs_index *ix, uint32_t parent,
			   const char *name, size_t len)
{
	uint32_t n;

	if (!ix->nbuckets)
		return TARFS_NONE;
	n = ix->buckets[hash_name(parent, name, len) & (ix->nbuckets - 1)];
	for (; n != TARFS_NONE; n = ix->nodes[n].hnext) {
		const char *nn = ix->arena + ix->nodes[n].name;

		if (ix->nodes[n].parent == parent && !strncmp(nn, name, len) && nn[len] == '\0')
			return n;
	}
	return TARFS_NONE;
}

uint32_t tarfs_lookup(const struct tarfs_index *ix, uint32_t parent, const char *name)
{
	return lookup_len(ix, parent, name, strlen(name));
}

/* Take @n out of its hash chain (it is replaced by a later member). */
static void unhash(struct tarfs_index *ix, uint32_t n)
{
	const char *name = ix->arena + ix->nodes[n].name;
	uint32_t *pp = &ix->buckets[hash_name(ix->nodes[n].parent, name, strlen(name)) &
				    (ix->nbuckets - 1)];

	while (*pp != TARFS_NONE && *pp != n)
		pp = &ix->nodes[*pp].hnext;
	if (*pp == n)
		*pp = ix->nodes[n].hnext;
	ix->nodes[ix->nodes[n].ino].nlink--;	/* one name less */
	ix->nodes[n].hnext = TARFS_NONE;
	ix->nodes[n].parent = TARFS_NONE;	/* in no directory now */
}

/* A new node @name in @parent (which must have no such name); its index. */
static int node_new(struct tarfs_index *ix, uint32_t parent, const char *name,
		    size_t len, uint32_t *out)
{
	struct tarfs_node *n;
	uint32_t h;
	int res;

	if (ix->nnodes == TARFS_NONE - 1)
		return -EOVERFLOW;
	if (ix->nnodes == ix->cap) {
		uint32_t cap = ix->cap ? ix->cap * 2 : 1024;
		struct tarfs_node *nn = realloc(ix->nodes, sizeof(*nn) * cap);

		if (!nn)
			return -ENOMEM;
		ix->nodes = nn;
		ix->cap = cap;
	}
	n = &ix->nodes[ix->nnodes];
	memset(n, 0, sizeof(*n));
	res = arena_add(ix, name, len, &n->name);
	if (res)
		return res;
	n->parent = parent;
	n->ino = ix->nnodes;
	n->nlink = 1;
	n->target = TARFS_NONE;
	*out = ix->nnodes++;
	if (ix->nnodes > ix->nbuckets / 2) {
		res = rehash(ix, ix->nbuckets ? ix->nbuckets * 2 : 1024);
		if (res)
			return res;
	} else {
		h = hash_name(parent, name, len) & (ix->nbuckets - 1);
		n->hnext = ix->buckets[h];
		ix->buckets[h] = *out;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Names                                                               */

/*
 * Member names as GNU tar extracts them: leading '/' removed, '.' and empty
 * components dropped.  A name with a ".." component is not extracted by
 * GNU tar ("Member name contains '..'"): NULL, the member is skipped.
 * Done in place; returns the normalised name ("" for the root).
 */
static char *normalise(char *name)
{
	char *out = name, *s = name, *start = name;

	while (*s) {
		char *c = s;
		size_t len;

		while (*s && *s != '/')
			s++;
		len = (size_t)(s - c);
		if (*s)
			s++;
		if (len == 0 || (len == 1 && c[0] == '.'))
			continue;
		if (len == 2 && c[0] == '.' && c[1] == '.')
			return NULL;
		if (out != start)
			*out++ = '/';
		memmove(out, c, len);
		out += len;
	}
	*out = '\0';
	return start;
}

/*
 * The directory that holds @path (normalised) and its last component.
 * Missing directories are created (implied by the path); a non-directory
 * in the way is replaced by a directory, as a later member wins.
 */
static int walk_parent(struct parser *p, const char *path, uint32_t *dirp,
		       const char **last)
{
	struct tarfs_index *ix = p->ix;
	uint32_t dir = 0, n;
	const char *c = path, *slash;
	int res;

	while ((slash = strchr(c, '/')) != NULL) {
		size_t len = (size_t)(slash - c);

		n = lookup_len(ix, dir, c, len);
		if (n != TARFS_NONE && !S_ISDIR(ix->nodes[ix->nodes[n].ino].mode)) {
			unhash(ix, n);
			n = TARFS_NONE;
		}
		if (n == TARFS_NONE) {
			res = node_new(ix, dir, c, len, &n);
			if (res)
				return fail(p, -res, "out of memory");
			ix->nodes[n].mode = S_IFDIR | 0755;
			ix->nodes[n].uid = p->opts->uid;
			ix->nodes[n].gid = p->opts->gid;
			ix->nodes[n].mtime = p->opts->mtime;
		}
		dir = ix->nodes[n].ino;
		c = slash + 1;
	}
	*dirp = dir;
	*last = c;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Headers                                                             */

static int read_block(struct parser *p, void *buf, uint64_t off)
{
	ssize_t n;
	size_t got = 0;

	while (got < BLOCK) {
		n = pread(p->fd, (char *)buf + got, BLOCK - got, (off_t)(off + got));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return fail(p, errno, "read: %s", strerror(errno));
		}
		if (n == 0 && got)
			return fail(p, EINVAL, "archive ends inside a header block "
				    "(truncated)");
		if (n == 0)
			return 1;	/* end of file */
		got += (size_t)n;
	}
	return 0;
}

static bool all_zero(const void *b)
{
	const unsigned char *u = b;

	for (int i = 0; i < BLOCK; i++)
		if (u[i])
			return false;
	return true;
}

/* The checksum as ustar says (unsigned bytes), or as old tars made it
 * (signed bytes): GNU tar accepts both. */
static bool checksum_ok(const struct ustar_header *h)
{
	const unsigned char *u = (const unsigned char *)h;
	const signed char *s = (const signed char *)h;
	int64_t want;
	long us = 0, ss = 0;

	if (parse_num(h->chksum, sizeof(h->chksum), &want, false))
		return false;
	for (int i = 0; i < BLOCK; i++) {
		bool in = i >= 148 && i < 156;

		us += in ? ' ' : u[i];
		ss += in ? ' ' : s[i];
	}
	return want == us || want == ss;
}

/* The data of a GNU 'L'/'K' or a pax header: @size bytes after the header. */
static int read_meta(struct parser *p, uint64_t off, uint64_t size, char **out)
{
	char *buf;
	size_t got = 0;

	if (size > META_MAX)
		return fail(p, EINVAL, "extended header of %" PRIu64 " bytes (at most %u)",
			    size, META_MAX);
	if (off + size > p->ix->archive_size)
		return fail(p, EINVAL, "extended header runs past the end of the archive "
			    "(truncated?)");
	buf = malloc(size + 1);
	if (!buf)
		return fail(p, ENOMEM, "out of memory");
	while (got < size) {
		ssize_t n = pread(p->fd, buf + got, size - got, (off_t)(off + got));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(buf);
			return fail(p, n < 0 ? errno : EINVAL, "extended header: %s",
				    n < 0 ? strerror(errno) : "truncated");
		}
		got += (size_t)n;
	}
	buf[size] = '\0';
	*out = buf;
	return 0;
}

static void pax_clear(struct pax *x)
{
	free(x->path);
	free(x->linkpath);
	free(x->sparse_name);
	memset(x, 0, sizeof(*x));
}

static int set_str(char **dst, const char *v, size_t len)
{
	char *s = malloc(len + 1);

	if (!s)
		return -ENOMEM;
	memcpy(s, v, len);
	s[len] = '\0';
	free(*dst);
	*dst = s;
	return 0;
}

/*
 * pax records "LEN KEY=VALUE\n", LEN counting the whole record.  A record
 * whose length does not hold it, a missing '=' or newline, a value that
 * is no number where one is due: the archive is refused.
 */
static int parse_pax(struct parser *p, const char *buf, size_t size, struct pax *x)
{
	size_t pos = 0;

	while (pos < size) {
		const char *rec = buf + pos, *sp, *eq, *val;
		uint64_t len = 0;
		size_t klen, vlen;
		char tmp[64];
		int64_t v;

		if (buf[pos] == '\0') {
			/* padding after the last record: GNU tar stops here too */
			break;
		}
		for (sp = rec; sp < buf + size && *sp >= '0' && *sp <= '9'; sp++) {
			len = len * 10 + (uint64_t)(*sp - '0');
			if (len > size)
				return fail(p, EINVAL, "pax record length runs past its header");
		}
		if (sp == rec || sp >= buf + size || *sp != ' ' || len > size - pos ||
		    len < (uint64_t)(sp - rec) + 3 || rec[len - 1] != '\n')
			return fail(p, EINVAL, "malformed pax record");
		eq = memchr(sp + 1, '=', (size_t)(rec + len - 1 - (sp + 1)));
		if (!eq || eq == sp + 1)
			return fail(p, EINVAL, "malformed pax record (no key=value)");
		klen = (size_t)(eq - (sp + 1));
		val = eq + 1;
		vlen = (size_t)(rec + len - 1 - val);
		pos += len;
#define KEY(k) (klen == sizeof(k) - 1 && !memcmp(sp + 1, k, klen))
		if (KEY("path")) {
			if (set_str(&x->path, val, vlen))
				return fail(p, ENOMEM, "out of memory");
			continue;
		}
		if (KEY("linkpath")) {
			if (set_str(&x->linkpath, val, vlen))
				return fail(p, ENOMEM, "out of memory");
			continue;
		}
		if (klen >= 11 && !memcmp(sp + 1, "GNU.sparse.", 11)) {
			x->sparse = true;
			/* the member's real name (its path is GNUSparseFile.N/...) */
			if (KEY("GNU.sparse.name") && set_str(&x->sparse_name, val, vlen))
				return fail(p, ENOMEM, "out of memory");
			continue;
		}
		if (!KEY("size") && !KEY("mtime") && !KEY("uid") && !KEY("gid"))
			continue;	/* uname, gname, atime, ctime, ...: not used */
		if (vlen == 0 || vlen >= sizeof(tmp))
			return fail(p, EINVAL, "pax %.*s: bad value", (int)klen, sp + 1);
		memcpy(tmp, val, vlen);
		tmp[vlen] = '\0';
		if (KEY("mtime")) {
			if (parse_pax_time(tmp, &x->mtime, &x->mtime_nsec))
				return fail(p, EINVAL, "pax mtime: bad value '%s'", tmp);
			x->has_mtime = true;
			continue;
		}
		if (parse_dec(tmp, &v, false) || strchr(tmp, '.'))
			return fail(p, EINVAL, "pax %.*s: bad value '%s'", (int)klen, sp + 1, tmp);
		if (KEY("size")) {
			x->size = (uint64_t)v;
			x->has_size = true;
		} else if (KEY("uid")) {
			x->uid = (uint64_t)v;
			x->has_uid = true;
		} else {
			x->gid = (uint64_t)v;
			x->has_gid = true;
		}
#undef KEY
	}
	return 0;
}

static uint64_t round_block(uint64_t n)
{
	return (n + BLOCK - 1) & ~(uint64_t)(BLOCK - 1);
}

/* The header's name: GNU long name, pax path, or ustar prefix/name. */
static char *member_name(struct parser *p, const struct ustar_header *h, bool posix)
{
	char buf[256 + 2];
	size_t n = 0;

	if (p->longname)
		return strdup(p->longname);
	if (p->ext.path)
		return strdup(p->ext.path);
	if (p->global.path)
		return strdup(p->global.path);
	if (posix && h->prefix[0]) {
		n = strnlen(h->prefix, sizeof(h->prefix));
		memcpy(buf, h->prefix, n);
		buf[n++] = '/';
	}
	memcpy(buf + n, h->name, strnlen(h->name, sizeof(h->name)));
	n += strnlen(h->name, sizeof(h->name));
	buf[n] = '\0';
	return strdup(buf);
}

static char *member_link(struct parser *p, const struct ustar_header *h)
{
	char buf[101];

	if (p->longlink)
		return strdup(p->longlink);
	if (p->ext.linkpath)
		return strdup(p->ext.linkpath);
	if (p->global.linkpath)
		return strdup(p->global.linkpath);
	memcpy(buf, h->linkname, sizeof(h->linkname));
	buf[100] = '\0';
	return strdup(buf);
}

/* Set node @n (a fresh name or one being replaced) from the header. */
static int add_member(struct parser *p, const struct ustar_header *h, char type,
		      uint64_t data_off, uint64_t size, bool posix)
{
	struct tarfs_index *ix = p->ix;
	char *name = member_name(p, h, posix), *link = NULL, *path;
	const char *last;
	int64_t mode, uid, gid, mtime, dmaj = 0, dmin = 0;
	uint32_t dir, n, target = TARFS_NONE, nsec = 0;
	uint32_t ftype;
	int res = 0;

	if (!name)
		return fail(p, ENOMEM, "out of memory");
	if (parse_num(h->mode, sizeof(h->mode), &mode, false) ||
	    parse_num(h->uid, sizeof(h->uid), &uid, false) ||
	    parse_num(h->gid, sizeof(h->gid), &gid, false) ||
	    parse_num(h->mtime, sizeof(h->mtime), &mtime, true)) {
		res = fail(p, EINVAL, "member %s: bad numeric field", name);
		goto out;
	}
	if (type == '3' || type == '4') {
		if (parse_num(h->devmajor, sizeof(h->devmajor), &dmaj, false) ||
		    parse_num(h->devminor, sizeof(h->devminor), &dmin, false) ||
		    dmaj > 0xfff || dmin > 0xfffff) {
			res = fail(p, EINVAL, "member %s: bad device number", name);
			goto out;
		}
	}
	if (p->ext.has_uid || p->global.has_uid)
		uid = (int64_t)(p->ext.has_uid ? p->ext.uid : p->global.uid);
	if (p->ext.has_gid || p->global.has_gid)
		gid = (int64_t)(p->ext.has_gid ? p->ext.gid : p->global.gid);
	if (p->ext.has_mtime) {
		mtime = p->ext.mtime;
		nsec = p->ext.mtime_nsec;
	} else if (p->global.has_mtime) {
		mtime = p->global.mtime;
		nsec = p->global.mtime_nsec;
	}
	if (uid > UINT32_MAX || gid > UINT32_MAX) {
		res = fail(p, EINVAL, "member %s: uid/gid beyond 32 bits", name);
		goto out;
	}
	switch (type) {
	case '5':
		ftype = S_IFDIR;
		break;
	case '2':
		ftype = S_IFLNK;
		break;
	case '3':
		ftype = S_IFCHR;
		break;
	case '4':
		ftype = S_IFBLK;
		break;
	case '6':
		ftype = S_IFIFO;
		break;
	default:	/* '0', '\0', '7', '1' and unknown types: regular */
		ftype = S_IFREG;
		break;
	}
	/* a regular member named "dir/" is a directory (old tars) */
	if (ftype == S_IFREG && type != '1' && *name && name[strlen(name) - 1] == '/')
		ftype = S_IFDIR;
	path = normalise(name);
	if (!path) {
		ix->skipped_dotdot++;
		goto out;
	}
	for (const char *c = path; *c;) {
		size_t len = strcspn(c, "/");

		if (len > 255) {
			res = fail(p, ENAMETOOLONG, "member %s: a name component longer "
				   "than 255 bytes", path);
			goto out;
		}
		c += len + (c[len] == '/');
	}
	if (type == '1' || type == '2') {
		link = member_link(p, h);
		if (!link) {
			res = fail(p, ENOMEM, "out of memory");
			goto out;
		}
	}
	if (type == '1') {
		/* a hard link: the inode of the member its name names now */
		char *tp = normalise(link);
		const char *tlast;
		uint32_t tdir = 0;

		if (!tp) {
			ix->skipped_dotdot++;
			goto out;
		}
		if (*tp) {
			res = walk_parent(p, tp, &tdir, &tlast);
			if (res)
				goto out;
			target = lookup_len(ix, tdir, tlast, strlen(tlast));
		}
		if (target == TARFS_NONE || S_ISDIR(ix->nodes[ix->nodes[target].ino].mode)) {
			res = fail(p, EINVAL, "member %s: hard link to %s, which is %s", path,
				   link, target == TARFS_NONE ? "not in the archive before it" :
				   "a directory");
			goto out;
		}
		target = ix->nodes[target].ino;
	}
	if (!*path) {
		/* "./": the root itself */
		if (ftype == S_IFDIR) {
			ix->nodes[0].mode = S_IFDIR | ((uint32_t)mode & 07777);
			ix->nodes[0].uid = (uint32_t)uid;
			ix->nodes[0].gid = (uint32_t)gid;
			ix->nodes[0].mtime = mtime;
			ix->nodes[0].mtime_nsec = nsec;
		}
		goto out;
	}
	res = walk_parent(p, path, &dir, &last);
	if (res)
		goto out;
	n = lookup_len(ix, dir, last, strlen(last));
	if (n != TARFS_NONE && ftype == S_IFDIR && type != '1' &&
	    S_ISDIR(ix->nodes[n].mode) && ix->nodes[n].ino == n) {
		/* a directory again: its metadata is the later one's; its
		 * entries stay, as on extraction */
	} else {
		if (n != TARFS_NONE) {
			if (n == target) {	/* a link to itself: nothing changes */
				goto out;
			}
			unhash(ix, n);
		}
		res = node_new(ix, dir, last, strlen(last), &n);
		if (res) {
			res = fail(p, -res, "out of memory");
			goto out;
		}
	}
	if (target != TARFS_NONE) {
		ix->nodes[n].ino = target;
		ix->nodes[target].nlink++;
		goto out;
	}
	ix->nodes[n].mode = ftype | ((uint32_t)mode & 07777);
	ix->nodes[n].uid = (uint32_t)uid;
	ix->nodes[n].gid = (uint32_t)gid;
	ix->nodes[n].mtime = mtime;
	ix->nodes[n].mtime_nsec = nsec;
	if (ftype == S_IFREG) {
		ix->nodes[n].off = data_off;
		ix->nodes[n].size = size;
	} else if (ftype == S_IFLNK) {
		res = arena_add(ix, link, strlen(link), &ix->nodes[n].target);
		if (res) {
			res = fail(p, -res, "out of memory");
			goto out;
		}
		ix->nodes[n].size = strlen(link);
	} else if (ftype == S_IFCHR || ftype == S_IFBLK) {
		ix->nodes[n].rdev = (uint32_t)makedev((unsigned int)dmaj, (unsigned int)dmin);
	}
out:
	free(name);
	free(link);
	return res;
}

/* After the last header: each directory's children as one array. */
static int finish(struct tarfs_index *ix)
{
	uint32_t n, total = 0;

	ix->child_start = calloc(ix->nnodes, sizeof(uint32_t));
	ix->child_count = calloc(ix->nnodes, sizeof(uint32_t));
	ix->children = malloc(sizeof(uint32_t) * (ix->nnodes ? ix->nnodes : 1));
	if (!ix->child_start || !ix->child_count || !ix->children)
		return -ENOMEM;
	for (n = 1; n < ix->nnodes; n++)
		if (ix->nodes[n].parent != TARFS_NONE)
			ix->child_count[ix->nodes[n].parent]++;
	for (n = 0; n < ix->nnodes; n++) {
		ix->child_start[n] = total;
		total += ix->child_count[n];
		ix->child_count[n] = 0;
	}
	for (n = 1; n < ix->nnodes; n++) {
		uint32_t d = ix->nodes[n].parent;

		if (d != TARFS_NONE)
			ix->children[ix->child_start[d] + ix->child_count[d]++] = n;
	}
	/* directories: 2 + subdirectories, as the tools expect */
	for (n = 1; n < ix->nnodes; n++) {
		uint32_t d = ix->nodes[n].parent;

		if (d != TARFS_NONE && S_ISDIR(ix->nodes[n].mode) && ix->nodes[n].ino == n)
			ix->nodes[d].nlink++;
	}
	for (n = 0; n < ix->nnodes; n++)
		if (S_ISDIR(ix->nodes[n].mode))
			ix->nodes[n].nlink++;
	return 0;
}

static int parse(struct parser *p)
{
	struct tarfs_index *ix = p->ix;
	union {
		struct ustar_header h;
		unsigned char b[BLOCK];
	} blk;
	uint64_t next_progress = 0;
	int res;

	for (;;) {
		const struct ustar_header *h = &blk.h;
		bool posix, gnu;
		int64_t ssize;
		uint64_t size, data_off;
		char type;

		res = read_block(p, blk.b, p->pos);
		if (res < 0)
			return res;
		if (res == 1) {
			/* no end-of-archive blocks: GNU tar warns and accepts */
			if (p->longname || p->longlink || p->ext.path || p->ext.has_size)
				return fail(p, EINVAL, "archive ends after an extended header "
					    "(truncated?)");
			return 0;
		}
		if (all_zero(blk.b))
			return 0;	/* end of archive (one zero block suffices) */
		if (!checksum_ok(h))
			return fail(p, EINVAL, "bad header checksum (not a tar archive, "
				    "or corrupt)");
		posix = !memcmp(h->magic, "ustar\0", 6);
		gnu = !memcmp(h->magic, "ustar ", 6);
		(void)gnu;
		type = h->typeflag;
		if (parse_num(h->size, sizeof(h->size), &ssize, false))
			return fail(p, EINVAL, "bad size field");
		size = (uint64_t)ssize;
		if (type != 'x' && type != 'g' && type != 'L' && type != 'K') {
			if (p->ext.has_size)
				size = p->ext.size;
			else if (p->global.has_size)
				size = p->global.size;
		}
		/* links, directories, devices and fifos carry no data in
		 * ustar; their size field is ignored (GNU tar does too) */
		if (type == '1' || type == '2' || type == '3' || type == '4' ||
		    type == '5' || type == '6')
			size = 0;
		data_off = p->pos + BLOCK;
		if (data_off > ix->archive_size || size > ix->archive_size - data_off) {
			char *name = member_name(p, h, posix);

			res = fail(p, EINVAL, "member %s: size %" PRIu64 " runs past the end "
				   "of the archive (%" PRIu64 " bytes; truncated?)",
				   name ? name : "?", size, ix->archive_size);
			free(name);
			return res;
		}
		switch (type) {
		case 'L':
		case 'K': {
			char **dst = type == 'L' ? &p->longname : &p->longlink;

			free(*dst);
			*dst = NULL;
			res = read_meta(p, data_off, size, dst);
			if (res)
				return res;
			break;
		}
		case 'x':
		case 'g': {
			char *buf;

			res = read_meta(p, data_off, size, &buf);
			if (res)
				return res;
			res = parse_pax(p, buf, size, type == 'x' ? &p->ext : &p->global);
			free(buf);
			if (res)
				return res;
			break;
		}
		case 'S': {
			char *name = member_name(p, h, posix);

			res = fail(p, EOPNOTSUPP, "member %s is a GNU sparse file: tarfs_zc "
				   "does not serve sparse members", name ? name : "?");
			free(name);
			return res;
		}
		case 'M':
			return fail(p, EOPNOTSUPP, "multi-volume archive: not served");
		case 'V':
			break;	/* volume label */
		default:
			if (p->ext.sparse || p->global.sparse) {
				const char *sn = p->ext.sparse_name ? p->ext.sparse_name :
						 p->global.sparse_name;
				char *name = sn ? strdup(sn) : member_name(p, h, posix);

				res = fail(p, EOPNOTSUPP, "member %s is a GNU sparse file: "
					   "tarfs_zc does not serve sparse members",
					   name ? name : "?");
				free(name);
				return res;
			}
			ix->members++;
			res = add_member(p, h, type, data_off, size, posix);
			if (res)
				return res;
			free(p->longname);
			free(p->longlink);
			p->longname = p->longlink = NULL;
			pax_clear(&p->ext);
			break;
		}
		p->pos = data_off + round_block(size);
		if (p->pos > ix->archive_size)
			p->pos = ix->archive_size;
		if (p->opts->progress && ix->members >= next_progress) {
			p->opts->progress(ix->members, p->pos, ix->archive_size,
					  p->opts->progress_data);
			next_progress = ix->members + 4096;
		}
	}
}

int tarfs_index_build(int fd, const struct tarfs_index_opts *opts,
		      struct tarfs_index **out, char *err, size_t errlen)
{
	static const struct tarfs_index_opts no_opts;
	struct parser p = { .fd = fd, .opts = opts ? opts : &no_opts,
			    .err = err, .errlen = errlen };
	struct tarfs_index *ix;
	struct stat st;
	uint32_t root;
	int res;

	if (errlen)
		err[0] = '\0';
	if (fstat(fd, &st) == -1) {
		snprintf(err, errlen, "%s", strerror(errno));
		return -errno;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "not a regular file");
		return -EINVAL;
	}
	ix = calloc(1, sizeof(*ix));
	if (!ix) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ix->archive_size = (uint64_t)st.st_size;
	p.ix = ix;
	res = node_new(ix, TARFS_NONE, "", 0, &root);
	if (res) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	ix->nodes[0].parent = TARFS_NONE;
	ix->nodes[0].mode = S_IFDIR | 0755;
	ix->nodes[0].uid = p.opts->uid;
	ix->nodes[0].gid = p.opts->gid;
	ix->nodes[0].mtime = p.opts->mtime;
	rehash(ix, ix->nbuckets);	/* the root is in no chain */
	res = parse(&p);
	if (!res) {
		res = finish(ix);
		if (res)
			snprintf(err, errlen, "out of memory");
	}
	if (p.opts->progress && !res)
		p.opts->progress(ix->members, ix->archive_size, ix->archive_size,
				 p.opts->progress_data);
fail:
	free(p.longname);
	free(p.longlink);
	pax_clear(&p.ext);
	pax_clear(&p.global);
	if (res) {
		tarfs_index_free(ix);
		return res;
	}
	*out = ix;
	return 0;
}

void tarfs_index_free(struct tarfs_index *ix)
{
	if (!ix)
		return;
	free(ix->nodes);
	free(ix->arena);
	free(ix->buckets);
	free(ix->children);
	free(ix->child_start);
	free(ix->child_count);
	free(ix);
}

size_t tarfs_index_bytes(const struct tarfs_index *ix)
{
	return ix->cap * sizeof(struct tarfs_node) + ix->arena_cap +
	       ix->nbuckets * sizeof(uint32_t) + 3 * ix->nnodes * sizeof(uint32_t);
}
