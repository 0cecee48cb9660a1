/*
 * host.h -- the Lua 5.4 host of cairn: one sandboxed lua_State per cairn_lua, with a memory cap
 * in its allocator, an instruction budget in a count hook, and the conversions between JSON
 * text, stored events and Lua values.  The core's aggregate and projection code drives it.
 *
 * A cairn_lua is not thread-safe: one thread at a time.  Functions that touch a Lua stack carry
 * the manual's [-o, +p, x] tag; none of them raises a Lua error into its caller (x is always
 * '-'): failures come back as CAIRN_E* codes with cairn_last_error() filled.
 */
#ifndef CAIRN_LUA_HOST_H
#define CAIRN_LUA_HOST_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "base.h" /* cairn_buf, errors */
#include "cairn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cairn_lua cairn_lua;

/* Receives what a script print()s: the arguments joined like Lua's print (tostring, tabs),
 * without the newline.  `script` is the name given to the running cairn_lua_call/load.
 * Must not raise a Lua error or call back into the host. */
typedef void (*cairn_lua_log_fn)(void *ctx, const char *script, const char *msg, size_t len);

/* Script kinds, for cairn_lua_check_shape. */
typedef enum cairn_lua_kind {
    CAIRN_LUA_AGGREGATE = 1,
    CAIRN_LUA_PROJECTION,
    CAIRN_LUA_UPCASTERS
} cairn_lua_kind;

/* Deepest nesting of tables/arrays that JSON conversion accepts (both ways). */
#define CAIRN_LUA_MAX_DEPTH 1000

/* Opens a sandboxed state.  instruction_limit: VM instructions per cairn_lua_call (0: no
 * limit); memory_limit: bytes the state may hold (0: no limit).  log may be NULL (print then
 * discards).  CAIRN_ENOMEM when the state cannot be built within memory_limit. */
int cairn_lua_open(uint64_t instruction_limit, size_t memory_limit, cairn_lua_log_fn log, void *ctx,
                   cairn_lua **out);

/* Sets the time limit of every later call (and every handler of a fold): ns of wall clock
 * (CLOCK_MONOTONIC) one invocation may run, 0: none.  A call past it ends like one past the
 * instruction limit, with CAIRN_ESCRIPT "time limit exceeded (S s)".  The clock is read by
 * the count hook and by the budgeted C loops (lh_charge), so an invocation can overrun the
 * limit by what LH_STEP instructions, or one budgeted chunk of C work, take. */
void cairn_lua_set_time_limit(cairn_lua *h, uint64_t ns);

/* Closes the state.  NULL is a no-op. */
void cairn_lua_close(cairn_lua *h);

/* The state, for pushing arguments and reading results.  Valid until cairn_lua_close.
 * Bare Lua API use between calls is not subject to the memory cap (a refusal there would be
 * an unprotected error, and Lua aborts on those); keep it small, and read script tables with
 * raw access (lua_rawget, lua_rawgeti), never lua_getfield/lua_gettable: a metatable would
 * run script code outside any limit and without protection. */
lua_State *cairn_lua_state(cairn_lua *h);

/* Bytes the state currently holds (the allocator's count). */
size_t cairn_lua_memory(const cairn_lua *h);

/* [-0, +(1|0), -]
 * Compiles src as a text chunk named `name` (chunkname "=name"; binary chunks are refused)
 * in an environment table of its own, runs it under the limits and checks it returned a
 * table, which is left on the stack.  On failure nothing is pushed: CAIRN_ESCRIPT with
 * script = name and the line (syntax or runtime), or CAIRN_EREJECTED. */
int cairn_lua_load(cairn_lua *h, const char *name, const char *src, size_t len);

/* [-(nargs+1), +(nresults|0), -]
 * Like lua_pcall for the function below its nargs arguments, with a fresh instruction
 * budget.  Failures become CAIRN_ESCRIPT (message; script = `script`; line = 1-based line of
 * the innermost frame of that script's chunk, 0 if unknown; position = `position`) or
 * CAIRN_EREJECTED (reason, details as JSON text, valid until the next reject on this thread).
 * On failure the function and its arguments are popped and nothing is pushed.  The state is
 * usable again afterwards.  Must not be nested (no cairn_lua_call from inside an emit hook). */
int cairn_lua_call(cairn_lua *h, const char *script, int nargs, int nresults, uint64_t position);

/* [-0, +(1|0), -]
 * Pushes the Lua value of a JSON text: objects and arrays as tables, integers as Lua integers
 * (all of int64), other numbers as floats (exactly), null as json.null.  Invalid JSON, integers
 * outside int64, nesting deeper than CAIRN_LUA_MAX_DEPTH: CAIRN_EINVAL.  Memory cap hit:
 * CAIRN_ESCRIPT ("memory limit exceeded").  On failure nothing is pushed. */
int cairn_lua_push_json(cairn_lua *h, const void *json, size_t len);

/* [-0, +0, -]
 * Appends the JSON text of the value at idx to buf.  Never runs Lua code (metatables are not
 * consulted).  A value JSON cannot hold (function, NaN, non-UTF-8 string, cycle, a table that
 * is neither a sequence 1..n nor string-keyed, nesting deeper than CAIRN_LUA_MAX_DEPTH):
 * CAIRN_ESCRIPT naming what and where ("cannot encode NaN at $.items[2]"); the caller fills
 * in the script's name and position.  On failure buf->len is left as it was. */
int cairn_lua_to_json(cairn_lua *h, int idx, cairn_buf *buf);

/* Outside a call, encoding counts as one more invocation: its values against a budget of the
 * instruction limit, the time against the time limit ("instruction limit exceeded ..." /
 * "time limit exceeded ..." from cairn_lua_to_json).  A single cairn_lua_to_json is one such
 * invocation; cairn_lua_encode_begin .. cairn_lua_encode_end makes every encoding in between
 * one (the several events one decide returned).  Inside a call they change nothing. */
void cairn_lua_encode_begin(cairn_lua *h);
void cairn_lua_encode_end(cairn_lua *h);

/* [-0, +(1|0), -]
 * Pushes the event table of spec section 3: type, data, metadata (a table, empty when none),
 * id (lowercase canonical UUID), stream, version, position, timestamp (integer ns), schema,
 * tags (a sequence), forgotten = false, bytes.  data is the decoded JSON, a string for
 * CAIRN_EVENT_BYTES (bytes = true, else false), absent (nil) when the event has none.  Errors
 * as cairn_lua_push_json. */
int cairn_lua_push_event(cairn_lua *h, const cairn_event *ev);

/* [-0, +0, -]
 * Folds a batch of events through an aggregate's reducers in one protected call.  Stack
 * slots (any valid indexes): state, the state table, replaced in place whenever a handler
 * returns a table; apply, the table of reducers by type (0: none, and then nothing is called);
 * star, apply["*"] (0: none); up, the upcasters table (0: none).  For each event in order:
 * its table is built as by cairn_lua_push_event (fresh, with fresh data, metadata and tags),
 * the upcaster chain of cairn_lua_upcast runs on it, then apply[e.type] (the type as upcast)
 * and star are called with
 * (state, event).  Every one of those calls gets a fresh instruction budget, as one
 * cairn_lua_call would; the memory cap holds throughout.  *done counts the events fully
 * applied (n on success).  Failures are reported as by cairn_lua_call, with script = `script`
 * (or "upcasters" for an upcaster) and position = the position of the event being applied;
 * a data/metadata text that does not decode is CAIRN_EINVAL as from cairn_lua_push_event.
 * On failure the state slot is not replaced (handlers may have changed that table in
 * place) and the stack is as it was.
 * Must not be nested in another call. */
int cairn_lua_fold(cairn_lua *h, const char *script, int state, int apply, int star, int up,
                   const cairn_event *evs, size_t n, int reuse, size_t *done);

/* [-0, +0, -]
 * The one upcaster chain, run by the read paths, projections and aggregates (cairn_lua_fold
 * runs it on every event): with the upcasters table at `up`, while up[e.type][e.schema] is a
 * function, the event table at `ev` is replaced by what that returns, whose schema is then
 * set to e.schema + 1 (at most 1000 steps).  *changed is 1 when an upcaster ran.  One
 * protected call; every upcaster gets a fresh instruction budget, the memory cap holds
 * throughout.  Failures are reported as by cairn_lua_call with script = "upcasters" and
 * position = `position` (the event's); an upcaster that does not return a table, or a longer
 * chain, is CAIRN_ESCRIPT.  On failure the slot at ev is not replaced (an upcaster may have
 * changed that table in place).  Must not be nested in another call. */
int cairn_lua_upcast(cairn_lua *h, int up, int ev, uint64_t position, int *changed);

/* [-0, +0, -]
 * Checks the table at the top of the stack (a loaded script) against a kind; a bad shape is
 * CAIRN_ESCRIPT naming the field ("apply.Deposited must be a function").  Reads raw fields
 * only: no script code runs.
 *   aggregate:  init function?, apply/decide/compensate tables of functions?, snapshot_every
 *               positive integer?, boundary function?
 *   projection: source table? (categories/streams/types/tags: sequences of strings),
 *               mode "async"|"inline"?, partition function?, init function?, apply table
 *   upcasters:  type -> table of [from_schema >= 1 integer] -> function */
int cairn_lua_check_shape(cairn_lua *h, const char *name, cairn_lua_kind kind);

/* [-0, +0, -]
 * Reads the value at idx as the list of events a decide or compensate handler returned (nil
 * is the caller's business): a table whose keys are exactly 1..n, n in *n ({} is the empty
 * list).  Anything else -- not a table, one event table, keys besides 1..n, holes -- is
 * CAIRN_EINVAL saying what it was ("returned one event table ..."); the caller names the
 * handler.  Raw reads only (event_in.c). */
int cairn_lua_check_list(cairn_lua *h, int idx, size_t *n);

/* [-0, +0, -]
 * Checks the event table at idx as cairn.Event checks its arguments (spec 3, "Event tables
 * from scripts"): only known keys (CAIRN_LUA_EVENT_NEW: type, data, metadata, tags, schema,
 * id, subject; CAIRN_LUA_EVENT_UPCAST: the fields of an
 * event as read), type a string, tags nil or a list of strings, metadata nil or a table with
 * string keys whose reserved keys have their types, id nil or a UUID string, schema (NEW) nil
 * or an integer; what the fields hold obeys the base rules (base.h: cairn__check_type ...),
 * in their wording.  data is left to the JSON encoder.  CAIRN_EINVAL with the rule broken
 * ("tags must be a list of strings, not a string"); the caller names the script and the
 * event.  Raw reads only (event_in.c). */
enum { CAIRN_LUA_EVENT_NEW = 1, CAIRN_LUA_EVENT_UPCAST };
int cairn_lua_check_event(cairn_lua *h, int idx, int kind);
/* [-0, +0, -] The metadata rule of cairn_lua_check_event alone (emit's argument). */
int cairn_lua_check_metadata(cairn_lua *h, int idx);

/* [-0, +0, -]
 * Reads the value at idx as the query a boundary returned (API.md section 5): a list (keys
 * 1..n) of item tables with no keys but `types` and `tags`, each nil or a non-empty list of
 * strings held to the type / tag rules (base.h: cairn__check_type, cairn__check_tag).  `{}` is
 * the query of no items, which matches every event (cairn.Query()).  *q's items and their
 * slices live in one malloc'd block, *mem (the caller frees it; NULL when there are no
 * items); the slices point into the Lua strings, valid while the value at idx stays on the
 * stack.  Anything else is CAIRN_EINVAL saying what ("item 2: tags must be a list of
 * strings, not a string"); the caller names the script.  Raw reads only (event_in.c). */
int cairn_lua_to_query(cairn_lua *h, int idx, cairn_query *q, void **mem);

/* [-0, +0, -]
 * With reuse nonzero, cairn_lua_fold refills one set of event tables (event, data object,
 * empty metadata, tags) for every event instead of making fresh ones, and the event's `id`
 * is materialized on first read.  That is only sound when no handler keeps a reference to
 * those tables or adds a field to the event: after the last batch, ask this function; when
 * *escaped is 1 the caller must fold again from the start without reuse (the reusable
 * tables are then dropped for good).  Roots: the state, apply, star and upcasters tables
 * (0 to skip); everything reachable from them is searched, function upvalues (and so the
 * scripts' globals) included. */
int cairn_lua_fold_escaped(cairn_lua *h, int state, int apply, int star, int up, int *escaped);

/* Inside a handler run by cairn_lua_fold (an emit hook, say): the index in `evs` of the
 * event being applied; 0 outside a fold. */
size_t cairn_lua_fold_index(const cairn_lua *h);

/* Sets (fn non-NULL) or clears the projection hook behind the sandbox's global
 * emit(stream, type, data, metadata).  The global always exists; while cleared, calling it
 * is a script error ("emit is only available in projection handlers").  fn runs as a
 * lua_CFunction on the script's stack (arguments at 1..4); it may raise Lua errors but must
 * free its C resources first. */
void cairn_lua_set_emit(cairn_lua *h, lua_CFunction fn, void *ud);

/* [-0, +0, -]
 * Counts `bytes` that the host holds on the scripts' behalf (the events a projection batch
 * has emitted so far) against the memory cap, in place of what the last call counted;
 * cairn_lua_set_emit(h, NULL, NULL) counts 0 again.  Growing past the cap is CAIRN_ESCRIPT
 * "memory limit exceeded (N bytes)", with the bytes not counted, and inside a call kills it
 * for memory (the caller raises, any error: the call ends with the memory message). */
int cairn_lua_hold(cairn_lua *h, size_t bytes);

/* The ud given to cairn_lua_set_emit, for use inside fn. */
void *cairn_lua_emit_ud(lua_State *L);

#ifdef __cplusplus
}
#endif
#endif /* CAIRN_LUA_HOST_H */
