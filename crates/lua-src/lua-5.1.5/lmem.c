/*
** $Id: lmem.c,v 1.70.1.1 2007/12/27 13:02:25 roberto Exp $
** Interface to Memory Manager
** See Copyright Notice in lua.h
*/


#include <stddef.h>

#define lmem_c
#define LUA_CORE

#include "lua.h"

#include "ldebug.h"
#include "ldo.h"
#include "lmem.h"
#include "lobject.h"
#include "lstate.h"



/*
** About the realloc function:
** void * frealloc (void *ud, void *ptr, size_t osize, size_t nsize);
** (`osize' is the old size, `nsize' is the new size)
**
** Lua ensures that (ptr == NULL) iff (osize == 0).
**
** * frealloc(ud, NULL, 0, x) creates a new block of size `x'
**
** * frealloc(ud, p, x, 0) frees the block `p'
** (in this specific case, frealloc must return NULL).
** particularly, frealloc(ud, NULL, 0, 0) does nothing
** (which is equivalent to free(NULL) in ANSI C)
**
** frealloc returns NULL if it cannot create or reallocate the area
** (any reallocation to an equal or smaller size cannot fail!)
*/



#define MINSIZEARRAY	4


void *luaM_growaux_ (lua_State *L, void *block, int *size, size_t size_elems,
                     int limit, const char *errormsg) {
  void *newblock;
  int newsize;
  if (*size >= limit/2) {  /* cannot double it? */
    if (*size >= limit)  /* cannot grow even a little? */
      luaG_runerror(L, errormsg);
    newsize = limit;  /* still have at least one free place */
  }
  else {
    newsize = (*size)*2;
    if (newsize < MINSIZEARRAY)
      newsize = MINSIZEARRAY;  /* minimum size */
  }
  newblock = luaM_reallocv(L, block, *size, newsize, size_elems);
  *size = newsize;  /* update only when everything else is OK */
  return newblock;
}


void *luaM_toobig (lua_State *L) {
  luaG_runerror(L, "memory allocation error: block too big");
  return NULL;  /* to avoid warnings */
}



/*
** Ferrite: a cache of small freed blocks.
**
** A script run allocates and frees the same few small objects every time (KEYS and
** ARGV, their strings, the values redis.call returns). Each went to the system
** allocator and back; on a server whose worker threads take turns running a tenant's
** state, the block is freed on another thread than the one that allocated it, the
** allocator's slowest path. Freed blocks of up to LUAI_BLOCKCACHE_MAX bytes are kept
** here instead, in lists by 8-byte size class, and handed out again by the next
** allocation of their class; the cache holds at most LUAI_BLOCKCACHE_LIMIT bytes.
**
** To make a cached block fit every size of its class, every size Lua passes to
** `frealloc' for a small block is rounded up to its class (BLOCKSIZE): allocation,
** reallocation and free alike, so the allocator always sees the same size for a
** block. Cached blocks stay allocated as far as `frealloc' knows (an allocator that
** enforces a memory limit counts them); when it refuses an allocation the cache is
** given back and the allocation retried once, so the limit still holds for live
** objects. `totalbytes' (the collector's view, and collectgarbage("count")) counts
** live objects only. The cache is given back by a full collection and at lua_close.
*/

#define BLOCKSIZE(s)	((s) <= LUAI_BLOCKCACHE_MAX ? (((s) + 7) & ~(size_t)7) : (s))
#define BLOCKCLASS(s)	(((s) - 1) >> 3)  /* of a rounded size in 8..MAX */


void luaM_freecache (global_State *g) {
  int i;
  for (i = 0; i < LUAI_BLOCKCACHE_CLASSES; i++) {
    size_t size = (size_t)(i + 1) << 3;
    void *b = g->blockcache[i];
    while (b != NULL) {
      void *next = *(void **)b;
      (*g->frealloc)(g->ud, b, size, 0);
      b = next;
    }
    g->blockcache[i] = NULL;
  }
  g->blockcache_bytes = 0;
}


/*
** generic allocation routine.
*/
void *luaM_realloc_ (lua_State *L, void *block, size_t osize, size_t nsize) {
  global_State *g = G(L);
  size_t obytes = BLOCKSIZE(osize), nbytes = BLOCKSIZE(nsize);
  void *newblock;
  lua_assert((osize == 0) == (block == NULL));
  if (nsize == 0) {
    if (block == NULL)  /* an empty array part or vector: nothing to do */
      return NULL;
    if (obytes <= LUAI_BLOCKCACHE_MAX &&
        g->blockcache_bytes + obytes <= LUAI_BLOCKCACHE_LIMIT) {
      void **head = &g->blockcache[BLOCKCLASS(obytes)];
      *(void **)block = *head;
      *head = block;
      g->blockcache_bytes += obytes;
      g->totalbytes -= osize;
      return NULL;
    }
  }
  else if (block == NULL && nbytes <= LUAI_BLOCKCACHE_MAX) {
    void **head = &g->blockcache[BLOCKCLASS(nbytes)];
    if (*head != NULL) {
      newblock = *head;
      *head = *(void **)newblock;
      g->blockcache_bytes -= nbytes;
      g->totalbytes += nsize;
      return newblock;
    }
  }
  newblock = (*g->frealloc)(g->ud, block, obytes, nbytes);
  if (newblock == NULL && nsize > 0 && g->blockcache_bytes > 0) {
    /* refused: give the cache back and try once more */
    luaM_freecache(g);
    newblock = (*g->frealloc)(g->ud, block, obytes, nbytes);
  }
  if (newblock == NULL && nsize > 0)
    luaD_throw(L, LUA_ERRMEM);
  lua_assert((nsize == 0) == (newblock == NULL));
  g->totalbytes = (g->totalbytes - osize) + nsize;
  return newblock;
}

