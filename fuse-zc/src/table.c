// SPDX-License-Identifier: LGPL-2.1-or-later
/* The table of recorded requests (see table.h). */
#include "table.h"

#include <errno.h>
#include <stdlib.h>

static size_t home_slot(const struct fzc_request_table *t, uint64_t unique)
{
	/* unique ids step by 2 (FUSE_REQ_ID_STEP): mix before masking. */
	return (size_t)((unique * 0x9E3779B97F4A7C15ULL) >> 32) & (t->cap - 1);
}

static int table_grow(struct fzc_request_table *t)
{
	size_t cap = t->cap ? t->cap * 2 : 64, i;
	struct fzc_request *old = t->slots, *slots = calloc(cap, sizeof(*slots));

	if (slots == NULL)
		return -ENOMEM;
	t->slots = slots;
	t->cap = cap;
	for (i = 0; old != NULL && i < cap / 2; i++) {
		if (old[i].unique != 0) {
			size_t j = home_slot(t, old[i].unique);

			while (slots[j].unique != 0)
				j = (j + 1) & (cap - 1);
			slots[j] = old[i];
		}
	}
	free(old);
	return 0;
}

void fzc_requests_init(struct fzc_request_table *t)
{
	pthread_mutex_init(&t->lock, NULL);
	t->slots = NULL;
	t->cap = t->used = 0;
}

void fzc_requests_destroy(struct fzc_request_table *t)
{
	free(t->slots);
	t->slots = NULL;
	t->cap = t->used = 0;
	pthread_mutex_destroy(&t->lock);
}

void fzc_requests_add(struct fzc_request_table *t, const struct fzc_request *r)
{
	size_t i;

	pthread_mutex_lock(&t->lock);
	if (t->used >= FZC_REQUESTS_MAX ||
	    ((t->used + 1) * 2 > t->cap && table_grow(t) != 0)) {
		pthread_mutex_unlock(&t->lock);
		return;
	}
	i = home_slot(t, r->unique);
	while (t->slots[i].unique != 0 && t->slots[i].unique != r->unique)
		i = (i + 1) & (t->cap - 1);
	if (t->slots[i].unique == 0)
		t->used++;
	t->slots[i] = *r;
	pthread_mutex_unlock(&t->lock);
}

/* Under t->lock: the slot of @unique, or t->cap when it is not there. */
static size_t find_locked(const struct fzc_request_table *t, uint64_t unique)
{
	size_t i;

	if (t->used == 0)
		return t->cap;
	i = home_slot(t, unique);
	while (t->slots[i].unique != unique) {
		if (t->slots[i].unique == 0)
			return t->cap;
		i = (i + 1) & (t->cap - 1);
	}
	return i;
}

bool fzc_requests_take(struct fzc_request_table *t, uint64_t unique, struct fzc_request *r)
{
	size_t i, j;

	pthread_mutex_lock(&t->lock);
	i = find_locked(t, unique);
	if (i == t->cap) {
		pthread_mutex_unlock(&t->lock);
		return false;
	}
	if (r != NULL)
		*r = t->slots[i];
	/* Backward-shift deletion keeps every probe chain unbroken. */
	for (j = (i + 1) & (t->cap - 1); t->slots[j].unique != 0; j = (j + 1) & (t->cap - 1)) {
		size_t home = home_slot(t, t->slots[j].unique);

		if (((j - home) & (t->cap - 1)) >= ((j - i) & (t->cap - 1))) {
			t->slots[i] = t->slots[j];
			i = j;
		}
	}
	t->slots[i].unique = 0;
	t->used--;
	pthread_mutex_unlock(&t->lock);
	return true;
}

bool fzc_requests_peek(struct fzc_request_table *t, uint64_t unique, struct fzc_request *r)
{
	size_t i;
	bool found;

	pthread_mutex_lock(&t->lock);
	i = find_locked(t, unique);
	found = i != t->cap;
	if (found)
		*r = t->slots[i];
	pthread_mutex_unlock(&t->lock);
	return found;
}
