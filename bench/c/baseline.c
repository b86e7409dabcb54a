/*
 * The raw C baseline of the benchmark harness: each workload as a careful C programmer would
 * write it against libpq directly. Prepared statements (PQprepare once, PQexecPrepared /
 * PQsendQueryPrepared after), binary parameters and binary results, pipeline mode with
 * PQpipelineSync, PQputCopyData with 64 KiB buffers, PQgetCopyData, and chunked-rows mode
 * (libpq 17+) or single-row mode for streaming.
 *
 * Every function returns 0 on success and -1 on failure (after printing libpq's message to
 * stderr), and stores a checksum through its last argument; the harness checks that every
 * client computes the same checksum for the same workload.
 *
 * The connection is made and owned by the caller (bl_connect / bl_finish). Nothing here is
 * timed: the harness times the calls from Rust.
 */
#include <arpa/inet.h>
#include <endian.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#define INT4OID 23
#define INT8OID 20
#define TEXTOID 25
#define FLOAT8OID 701
#define TIMESTAMPTZOID 1184

/* Rows per COPY buffer handed to PQputCopyData, as pqlib's CopyInWriter does. */
#define COPY_BUFFER (64 * 1024)

static int fail(PGconn *conn, const char *what) {
    fprintf(stderr, "baseline.c: %s: %s", what, PQerrorMessage(conn));
    return -1;
}

/* Checks a result, frees it, and returns 0 if its status is `want`. */
static int expect(PGconn *conn, PGresult *res, ExecStatusType want, const char *what) {
    if (res == NULL || PQresultStatus(res) != want) {
        if (res != NULL) {
            fprintf(stderr, "baseline.c: %s: %s", what, PQresultErrorMessage(res));
            PQclear(res);
            return -1;
        }
        return fail(conn, what);
    }
    PQclear(res);
    return 0;
}

/* A result that is not the one expected: reports it, frees it, and fails. */
static int bad(PGconn *conn, PGresult *res, const char *what) {
    if (res == NULL)
        return fail(conn, what);
    fprintf(stderr, "baseline.c: %s: status %s, %d rows: %s", what,
            PQresStatus(PQresultStatus(res)), PQntuples(res), PQresultErrorMessage(res));
    PQclear(res);
    return -1;
}

static inline int32_t get_i32(const char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return (int32_t)ntohl(v);
}

static inline int64_t get_i64(const char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return (int64_t)be64toh(v);
}

static inline double get_f64(const char *p) {
    uint64_t v;
    double d;
    memcpy(&v, p, 8);
    v = be64toh(v);
    memcpy(&d, &v, 8);
    return d;
}

static inline void put_i16(char *p, int16_t v) {
    uint16_t be = htons((uint16_t)v);
    memcpy(p, &be, 2);
}

static inline void put_i32(char *p, int32_t v) {
    uint32_t be = htonl((uint32_t)v);
    memcpy(p, &be, 4);
}

static inline void put_i64(char *p, int64_t v) {
    uint64_t be = htobe64((uint64_t)v);
    memcpy(p, &be, 8);
}

static inline void put_f64(char *p, double d) {
    uint64_t v;
    memcpy(&v, &d, 8);
    put_i64(p, (int64_t)v);
}

PGconn *bl_connect(const char *conninfo) {
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) != CONNECTION_OK) {
        fail(conn, "connect");
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

void bl_finish(PGconn *conn) { PQfinish(conn); }

int bl_exec(PGconn *conn, const char *sql) {
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_TUPLES_OK)
        return expect(conn, res, PGRES_TUPLES_OK, sql);
    return expect(conn, res, PGRES_COMMAND_OK, sql);
}

int bl_prepare(PGconn *conn, const char *name, const char *sql, int nparams, const Oid *types) {
    return expect(conn, PQprepare(conn, name, sql, nparams, types), PGRES_COMMAND_OK, "prepare");
}

/* The libpq version (PQlibVersion), e.g. 150020. */
int bl_lib_version(void) { return PQlibVersion(); }

/* W1: `SELECT $1::int4` n times (statement "w1"), one round trip each. */
int bl_w1(PGconn *conn, int n, long long *sum) {
    long long total = 0;
    for (int i = 1; i <= n; i++) {
        char param[4];
        put_i32(param, i);
        const char *values[1] = {param};
        int lengths[1] = {4};
        int formats[1] = {1};
        PGresult *res = PQexecPrepared(conn, "w1", 1, values, lengths, formats, 1);
        if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
            return bad(conn, res, "w1");
        total += get_i32(PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    *sum = total;
    return 0;
}

/* W2: pgbench point selects (statement "w2"), one per aid. */
int bl_w2(PGconn *conn, const int32_t *aids, int n, long long *sum) {
    long long total = 0;
    for (int i = 0; i < n; i++) {
        char param[4];
        put_i32(param, aids[i]);
        const char *values[1] = {param};
        int lengths[1] = {4};
        int formats[1] = {1};
        PGresult *res = PQexecPrepared(conn, "w2", 1, values, lengths, formats, 1);
        if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
            return bad(conn, res, "w2");
        total += 1 + get_i32(PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    *sum = total;
    return 0;
}

/*
 * W8a/W8b: `SELECT $1::int4` n times as the unnamed statement: PQexecParams with the parameter
 * type given (int4), binary parameter and result. Each run is one sync segment (Parse, Bind,
 * Describe portal, Execute, Sync): what a never-prepare client sends, and what a pooler in
 * transaction mode passes through.
 */
int bl_w1_params(PGconn *conn, const char *sql, int n, long long *sum) {
    long long total = 0;
    const Oid types[1] = {INT4OID};
    for (int i = 1; i <= n; i++) {
        char param[4];
        put_i32(param, i);
        const char *values[1] = {param};
        int lengths[1] = {4};
        int formats[1] = {1};
        PGresult *res = PQexecParams(conn, sql, 1, types, values, lengths, formats, 1);
        if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
            return bad(conn, res, "w1 params");
        total += get_i32(PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    *sum = total;
    return 0;
}

/* W8c/W8d: pgbench point selects as the unnamed statement, as bl_w1_params. */
int bl_w2_params(PGconn *conn, const char *sql, const int32_t *aids, int n, long long *sum) {
    long long total = 0;
    const Oid types[1] = {INT4OID};
    for (int i = 0; i < n; i++) {
        char param[4];
        put_i32(param, aids[i]);
        const char *values[1] = {param};
        int lengths[1] = {4};
        int formats[1] = {1};
        PGresult *res = PQexecParams(conn, sql, 1, types, values, lengths, formats, 1);
        if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
            return bad(conn, res, "w2 params");
        total += 1 + get_i32(PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    *sum = total;
    return 0;
}

/* Decodes the W3 columns (int4, text, float8, timestamptz) of every row of `res`. */
static long long decode_w3(const PGresult *res) {
    long long total = 0;
    int rows = PQntuples(res);
    for (int r = 0; r < rows; r++) {
        int32_t g = get_i32(PQgetvalue(res, r, 0));
        const char *text = PQgetvalue(res, r, 1);
        int len = PQgetlength(res, r, 1);
        double f = get_f64(PQgetvalue(res, r, 2));
        int64_t ts = get_i64(PQgetvalue(res, r, 3));
        (void)text;
        total += g + len + (long long)f + (ts != 0);
    }
    return total;
}

/* W3: `SELECT g, g::text, g::float8, now() FROM generate_series(1, $1) g` (statement "w3"),
 * the whole result at once. */
int bl_w3(PGconn *conn, int n, long long *sum) {
    char param[4];
    put_i32(param, n);
    const char *values[1] = {param};
    int lengths[1] = {4};
    int formats[1] = {1};
    PGresult *res = PQexecPrepared(conn, "w3", 1, values, lengths, formats, 1);
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK)
        return expect(conn, res, PGRES_TUPLES_OK, "w3");
    *sum = decode_w3(res);
    PQclear(res);
    return 0;
}

/* W3 streamed: the same statement, rows read as they arrive in chunks of `chunk` rows
 * (libpq 17+) or one row per result (single-row mode before 17). */
int bl_w3_stream(PGconn *conn, int n, int chunk, long long *sum) {
    char param[4];
    put_i32(param, n);
    const char *values[1] = {param};
    int lengths[1] = {4};
    int formats[1] = {1};
    if (!PQsendQueryPrepared(conn, "w3", 1, values, lengths, formats, 1))
        return fail(conn, "w3 stream send");
#ifdef LIBPQ_HAS_CHUNK_MODE
    if (!PQsetChunkedRowsMode(conn, chunk))
        return fail(conn, "PQsetChunkedRowsMode");
#else
    (void)chunk;
    if (!PQsetSingleRowMode(conn))
        return fail(conn, "PQsetSingleRowMode");
#endif
    long long total = 0;
    int failed = 0;
    PGresult *res;
    while ((res = PQgetResult(conn)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_SINGLE_TUPLE
#ifdef LIBPQ_HAS_CHUNK_MODE
            || st == PGRES_TUPLES_CHUNK
#endif
            || st == PGRES_TUPLES_OK) {
            total += decode_w3(res);
        } else {
            fprintf(stderr, "baseline.c: w3 stream: %s", PQresultErrorMessage(res));
            failed = 1;
        }
        PQclear(res);
    }
    *sum = total;
    return failed ? -1 : 0;
}

/* The W4 row i: (i, texts[20 i .. 20 i + 20], i * 0.5, base_us + i), binary parameters. */
struct w4_params {
    char a[4], c[8], d[8];
    const char *values[4];
    int lengths[4];
    int formats[4];
};

static void w4_fill(struct w4_params *p, int i, const char *texts, long long base_us) {
    put_i32(p->a, i);
    put_f64(p->c, i * 0.5);
    put_i64(p->d, base_us + i);
    p->values[0] = p->a;
    p->values[1] = texts + 20 * (size_t)i;
    p->values[2] = p->c;
    p->values[3] = p->d;
    p->lengths[0] = 4;
    p->lengths[1] = 20;
    p->lengths[2] = 8;
    p->lengths[3] = 8;
    for (int k = 0; k < 4; k++)
        p->formats[k] = 1;
}

/* W4, prepared loop: n inserts (statement "w4") in one transaction, one round trip each. */
int bl_w4_loop(PGconn *conn, int n, const char *texts, long long base_us, long long *affected) {
    if (bl_exec(conn, "BEGIN"))
        return -1;
    long long total = 0;
    struct w4_params p;
    for (int i = 0; i < n; i++) {
        w4_fill(&p, i, texts, base_us);
        PGresult *res = PQexecPrepared(conn, "w4", 4, p.values, p.lengths, p.formats, 1);
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
            return expect(conn, res, PGRES_COMMAND_OK, "w4 insert");
        total += atoll(PQcmdTuples(res));
        PQclear(res);
    }
    if (bl_exec(conn, "COMMIT"))
        return -1;
    *affected = total;
    return 0;
}

/* Reads the results of one pipeline batch: `count` statements, then the sync point. */
static int read_batch(PGconn *conn, int count, long long *total) {
    for (int k = 0; k < count; k++) {
        PGresult *res = PQgetResult(conn);
        if (res == NULL || (PQresultStatus(res) != PGRES_COMMAND_OK &&
                            PQresultStatus(res) != PGRES_TUPLES_OK))
            return expect(conn, res, PGRES_COMMAND_OK, "pipeline result");
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
            *total += PQntuples(res) ? get_i64(PQgetvalue(res, 0, 0)) : 0;
        else
            *total += atoll(PQcmdTuples(res));
        PQclear(res);
        /* The NULL that ends each statement's results. */
        res = PQgetResult(conn);
        if (res != NULL) {
            PQclear(res);
            fprintf(stderr, "baseline.c: pipeline: a second result for one statement\n");
            return -1;
        }
    }
    return expect(conn, PQgetResult(conn), PGRES_PIPELINE_SYNC, "pipeline sync");
}

/* W4 through the pipeline: n inserts in batches of `batch`, each batch ending in a sync
 * point; the results of batch k are read after batch k + 1 was sent, so the server always
 * has work queued. */
int bl_w4_pipeline(PGconn *conn, int n, int batch, const char *texts, long long base_us,
                   long long *affected) {
    if (!PQenterPipelineMode(conn))
        return fail(conn, "PQenterPipelineMode");
    long long total = 0;
    int unread = 0; /* statements of the previous batch, results not yet read */
    struct w4_params p;
    for (int start = 0; start < n; start += batch) {
        int end = start + batch < n ? start + batch : n;
        for (int i = start; i < end; i++) {
            w4_fill(&p, i, texts, base_us);
            if (!PQsendQueryPrepared(conn, "w4", 4, p.values, p.lengths, p.formats, 1))
                return fail(conn, "w4 pipeline send");
        }
        if (!PQpipelineSync(conn))
            return fail(conn, "PQpipelineSync");
        if (unread && read_batch(conn, unread, &total))
            return -1;
        unread = end - start;
    }
    if (unread && read_batch(conn, unread, &total))
        return -1;
    if (!PQexitPipelineMode(conn))
        return fail(conn, "PQexitPipelineMode");
    *affected = total;
    return 0;
}

/* Ends a COPY FROM STDIN and reads its result. */
static int copy_end(PGconn *conn, long long *affected) {
    if (PQputCopyEnd(conn, NULL) != 1)
        return fail(conn, "PQputCopyEnd");
    PGresult *res = PQgetResult(conn);
    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK)
        return expect(conn, res, PGRES_COMMAND_OK, "copy end");
    *affected = atoll(PQcmdTuples(res));
    PQclear(res);
    res = PQgetResult(conn);
    if (res != NULL)
        PQclear(res);
    return 0;
}

static int copy_start(PGconn *conn, const char *sql) {
    PGresult *res = PQexec(conn, sql);
    return expect(conn, res, PGRES_COPY_IN, sql);
}

/* W4, COPY text: the rows of `data` (row r is data[ends[r - 1] .. ends[r]], tab-separated
 * lines), appended one by one to a 64 KiB buffer that goes to PQputCopyData when full. */
int bl_w4_copy_text(PGconn *conn, const char *sql, const char *data, const size_t *ends, int n,
                    long long *affected) {
    if (copy_start(conn, sql))
        return -1;
    char *buf = malloc(COPY_BUFFER);
    size_t used = 0, prev = 0;
    for (int r = 0; r < n; r++) {
        size_t len = ends[r] - prev;
        if (used + len > COPY_BUFFER) {
            if (PQputCopyData(conn, buf, (int)used) != 1) {
                free(buf);
                return fail(conn, "PQputCopyData");
            }
            used = 0;
        }
        memcpy(buf + used, data + prev, len);
        used += len;
        prev = ends[r];
    }
    int ok = used == 0 || PQputCopyData(conn, buf, (int)used) == 1;
    free(buf);
    if (!ok)
        return fail(conn, "PQputCopyData");
    return copy_end(conn, affected);
}

/* W4, COPY binary: the W4 rows encoded in the binary COPY format into a 64 KiB buffer. */
int bl_w4_copy_binary(PGconn *conn, const char *sql, int n, const char *texts, long long base_us,
                      long long *affected) {
    if (copy_start(conn, sql))
        return -1;
    char *buf = malloc(COPY_BUFFER);
    static const char header[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";
    memcpy(buf, header, 19);
    size_t used = 19;
    /* A row: field count, then (length, value) for int4, text(20), float8, timestamptz. */
    const size_t row = 2 + (4 + 4) + (4 + 20) + (4 + 8) + (4 + 8);
    for (int i = 0; i < n; i++) {
        if (used + row > COPY_BUFFER) {
            if (PQputCopyData(conn, buf, (int)used) != 1) {
                free(buf);
                return fail(conn, "PQputCopyData");
            }
            used = 0;
        }
        char *p = buf + used;
        put_i16(p, 4);
        put_i32(p + 2, 4);
        put_i32(p + 6, i);
        put_i32(p + 10, 20);
        memcpy(p + 14, texts + 20 * (size_t)i, 20);
        put_i32(p + 34, 8);
        put_f64(p + 38, i * 0.5);
        put_i32(p + 46, 8);
        put_i64(p + 50, base_us + i);
        used += row;
    }
    if (used + 2 > COPY_BUFFER) {
        if (PQputCopyData(conn, buf, (int)used) != 1) {
            free(buf);
            return fail(conn, "PQputCopyData");
        }
        used = 0;
    }
    put_i16(buf + used, -1);
    used += 2;
    int ok = PQputCopyData(conn, buf, (int)used) == 1;
    free(buf);
    if (!ok)
        return fail(conn, "PQputCopyData");
    return copy_end(conn, affected);
}

/* W5: `COPY … TO STDOUT`, every buffer from PQgetCopyData counted and discarded. */
int bl_w5(PGconn *conn, const char *sql, long long *bytes) {
    PGresult *res = PQexec(conn, sql);
    if (expect(conn, res, PGRES_COPY_OUT, sql))
        return -1;
    long long total = 0;
    char *buf;
    int n;
    while ((n = PQgetCopyData(conn, &buf, 0)) > 0) {
        total += n;
        PQfreemem(buf);
    }
    if (n == -2)
        return fail(conn, "PQgetCopyData");
    res = PQgetResult(conn);
    if (expect(conn, res, PGRES_COMMAND_OK, "copy out end"))
        return -1;
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);
    *bytes = total;
    return 0;
}

/* W6: n `SELECT $1::int8` (statement "w6"), one round trip each. */
int bl_w6_sequential(PGconn *conn, int n, long long *sum) {
    long long total = 0;
    for (int i = 1; i <= n; i++) {
        char param[8];
        put_i64(param, i);
        const char *values[1] = {param};
        int lengths[1] = {8};
        int formats[1] = {1};
        PGresult *res = PQexecPrepared(conn, "w6", 1, values, lengths, formats, 1);
        if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
            return bad(conn, res, "w6");
        total += get_i64(PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    *sum = total;
    return 0;
}

/* W6 pipelined: the n statements sent in pipeline mode, one sync point, then read. */
int bl_w6_pipelined(PGconn *conn, int n, long long *sum) {
    if (!PQenterPipelineMode(conn))
        return fail(conn, "PQenterPipelineMode");
    for (int i = 1; i <= n; i++) {
        char param[8];
        put_i64(param, i);
        const char *values[1] = {param};
        int lengths[1] = {8};
        int formats[1] = {1};
        if (!PQsendQueryPrepared(conn, "w6", 1, values, lengths, formats, 1))
            return fail(conn, "w6 send");
    }
    if (!PQpipelineSync(conn))
        return fail(conn, "PQpipelineSync");
    long long total = 0;
    if (read_batch(conn, n, &total))
        return -1;
    if (!PQexitPipelineMode(conn))
        return fail(conn, "PQexitPipelineMode");
    *sum = total;
    return 0;
}

/* W7's C equivalent of `window` concurrent tasks on one connection: `SELECT $1::int8`
 * (statement "w6") for first .. first + n - 1, each in its own sync segment (as an async
 * client pipelines independent requests), keeping `window` of them in flight. */
int bl_w7_window(PGconn *conn, int first, int n, int window, long long *sum) {
    if (!PQenterPipelineMode(conn))
        return fail(conn, "PQenterPipelineMode");
    long long total = 0;
    int sent = 0, done = 0;
    while (done < n) {
        while (sent < n && sent - done < window) {
            char param[8];
            put_i64(param, first + sent);
            const char *values[1] = {param};
            int lengths[1] = {8};
            int formats[1] = {1};
            if (!PQsendQueryPrepared(conn, "w6", 1, values, lengths, formats, 1))
                return fail(conn, "w7 send");
            if (!PQpipelineSync(conn))
                return fail(conn, "PQpipelineSync");
            sent++;
        }
        if (read_batch(conn, 1, &total))
            return -1;
        done++;
    }
    if (!PQexitPipelineMode(conn))
        return fail(conn, "PQexitPipelineMode");
    *sum = total;
    return 0;
}

/* Micro-benchmark helpers (benches/ffi.rs). */

/* Sums column `col` (int4, binary) over every row of `res`: PQgetvalue + ntohl per value. */
long long bl_sum_int4(const PGresult *res, int col) {
    long long total = 0;
    int rows = PQntuples(res);
    for (int r = 0; r < rows; r++)
        total += get_i32(PQgetvalue(res, r, col));
    return total;
}

/* Sums the lengths of column `col` (text) over every row: PQgetvalue + PQgetlength, with the
 * first byte read so the value is really touched. */
long long bl_sum_text(const PGresult *res, int col) {
    long long total = 0;
    int rows = PQntuples(res);
    for (int r = 0; r < rows; r++) {
        const char *v = PQgetvalue(res, r, col);
        total += PQgetlength(res, r, col) + (unsigned char)v[0];
    }
    return total;
}

/* PQntuples called n times from C, for the cost of the call without the FFI boundary. */
long long bl_ntuples_loop(const PGresult *res, long long n) {
    long long total = 0;
    for (long long i = 0; i < n; i++) {
        total += PQntuples(res);
        __asm__ volatile("" : "+r"(total));
    }
    return total;
}
