/* test_kgroup_members — core/kafka_group.c's reading of a consumer group's
 * description (kgroup_members' parts): a member's ConsumerProtocol
 * assignment bytes, and what its client.id "eddy/<instance>/<admin>" says
 * (shuffle = "kafka": the instances, their admin addresses, what each owns). */
#include "test.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>

#include "source_kafka.h"

/* A builder of big-endian ConsumerProtocolAssignment bytes. */
typedef struct { unsigned char b[1024]; int n; } buf;
static void be16(buf *w, int v) { w->b[w->n++] = (unsigned char)(v >> 8); w->b[w->n++] = (unsigned char)v; }
static void be32(buf *w, int32_t v) {
    for (int s = 24; s >= 0; s -= 8) w->b[w->n++] = (unsigned char)((uint32_t)v >> s);
}
static void str16(buf *w, const char *s) {
    be16(w, (int)strlen(s));
    memcpy(w->b + w->n, s, strlen(s));
    w->n += (int)strlen(s);
}

/* version 1; "in" partitions 0 and 3; "app-key_by-2-repartition" partition 2; 3 bytes of user data */
static buf two_topics(void)
{
    buf w = { .n = 0 };
    be16(&w, 1);
    be32(&w, 2);
    str16(&w, "in");
    be32(&w, 2);
    be32(&w, 0);
    be32(&w, 3);
    str16(&w, "app-key_by-2-repartition");
    be32(&w, 1);
    be32(&w, 2);
    be32(&w, 3);               /* user data: length and bytes, ignored */
    w.b[w.n++] = 'x';
    return w;
}

static char *dump(json_t *j)
{
    return j ? json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
}

TEST(an_assignment_lists_each_topics_partitions)
{
    buf w = two_topics();
    json_t *j = kgroup_assignment_json(w.b, w.n);
    char *s = dump(j);
    CHECK_STR(s, "{\"app-key_by-2-repartition\":[2],\"in\":[0,3]}");
    free(s);
    json_decref(j);
}

TEST(an_empty_assignment_is_an_empty_object)
{
    json_t *j = kgroup_assignment_json(NULL, 0);
    char *s = dump(j);
    CHECK_STR(s, "{}");
    free(s);
    json_decref(j);
    buf w = { .n = 0 };
    be16(&w, 0);
    be32(&w, 0);
    j = kgroup_assignment_json(w.b, w.n);
    s = dump(j);
    CHECK_STR(s, "{}");
    free(s);
    json_decref(j);
}

TEST(a_truncated_or_negative_assignment_is_malformed)
{
    buf w = two_topics();
    /* cut anywhere inside the topics: never a partial answer */
    for (int n = 1; n < w.n - 7; n++) CHECK(kgroup_assignment_json(w.b, n) == NULL);
    buf neg = { .n = 0 };
    be16(&neg, 0);
    be32(&neg, -1);
    CHECK(kgroup_assignment_json(neg.b, neg.n) == NULL);
    buf negp = { .n = 0 };
    be16(&negp, 0);
    be32(&negp, 1);
    str16(&negp, "t");
    be32(&negp, -5);
    CHECK(kgroup_assignment_json(negp.b, negp.n) == NULL);
}

static json_t *member(const char *client_id, const char *host, buf *a)
{
    struct rd_kafka_group_member_info m = {
        .member_id = "m-1", .client_id = (char *)client_id, .client_host = (char *)host,
        .member_assignment = a ? a->b : NULL, .member_assignment_size = a ? a->n : 0,
    };
    return kgroup_member_json(&m);
}

TEST(an_eddy_member_names_its_instance_and_admin_address)
{
    buf w = two_topics();
    json_t *j = member("eddy/0123456789abcdef/127.0.0.1:8600", "/10.0.0.7", &w);
    CHECK_STR(json_string_value(json_object_get(j, "instance")), "0123456789abcdef");
    CHECK_STR(json_string_value(json_object_get(j, "admin")), "127.0.0.1:8600");
    CHECK_STR(json_string_value(json_object_get(j, "host")), "10.0.0.7");
    CHECK(json_array_size(json_object_get(json_object_get(j, "partitions"), "in")) == 2);
    json_decref(j);
}

TEST(an_admin_bound_to_every_address_is_reached_at_the_members_host)
{
    json_t *j = member("eddy/0123456789abcdef/0.0.0.0:8600", "/10.0.0.7", NULL);
    CHECK_STR(json_string_value(json_object_get(j, "admin")), "10.0.0.7:8600");
    json_decref(j);
    j = member("eddy/0123456789abcdef/[::]:8600", "/fd00::7", NULL);
    CHECK_STR(json_string_value(json_object_get(j, "admin")), "[fd00::7]:8600");
    json_decref(j);
}

TEST(a_member_without_admin_server_or_not_eddy_has_null_fields)
{
    json_t *j = member("eddy/0123456789abcdef/", "/10.0.0.7", NULL);
    CHECK_STR(json_string_value(json_object_get(j, "instance")), "0123456789abcdef");
    CHECK(json_is_null(json_object_get(j, "admin")));
    json_decref(j);
    j = member("rdkafka", "/10.0.0.8", NULL);
    CHECK(json_is_null(json_object_get(j, "instance")));
    CHECK(json_is_null(json_object_get(j, "admin")));
    CHECK_STR(json_string_value(json_object_get(j, "client_id")), "rdkafka");
    json_decref(j);
}

TEST(a_malformed_assignment_is_flagged_not_guessed)
{
    buf w = two_topics();
    w.n = 9;
    json_t *j = member("eddy/0123456789abcdef/127.0.0.1:1", "/h", &w);
    char *s = dump(json_object_get(j, "partitions"));
    CHECK_STR(s, "{}");
    free(s);
    CHECK(json_is_string(json_object_get(j, "assignment_error")));
    json_decref(j);
}

int main(void)
{
    RUN(an_assignment_lists_each_topics_partitions);
    RUN(an_empty_assignment_is_an_empty_object);
    RUN(a_truncated_or_negative_assignment_is_malformed);
    RUN(an_eddy_member_names_its_instance_and_admin_address);
    RUN(an_admin_bound_to_every_address_is_reached_at_the_members_host);
    RUN(a_member_without_admin_server_or_not_eddy_has_null_fields);
    RUN(a_malformed_assignment_is_flagged_not_guessed);
    return TEST_END();
}
