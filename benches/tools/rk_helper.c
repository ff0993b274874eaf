/*
 * rk_helper: small librdkafka-based helper used by the Runnel benchmark and
 * librdkafka test harness scripts.
 *
 *   rk_helper mock [TOPIC:PARTITIONS ...]
 *       Start librdkafka's in-memory mock cluster (1 broker) in this process,
 *       create the given topics, print "BOOTSTRAP <host:port>" on stdout and
 *       serve until SIGTERM/SIGINT or until stdin reaches EOF (when stdin is
 *       not a terminal and RK_HELPER_IGNORE_STDIN is unset).
 *       Topics not created here are auto-created by the mock with 4
 *       partitions.
 *
 *   rk_helper create-topic BOOTSTRAP TOPIC PARTITIONS
 *       CreateTopics through the Admin API (replication factor 1).
 *       TOPIC_ALREADY_EXISTS counts as success.
 *
 *   rk_helper delete-topic BOOTSTRAP TOPIC
 *       DeleteTopics through the Admin API.
 *
 * Built by benches/build_tools.sh against the librdkafka tree in
 * .tools/librdkafka.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>

#include "rdkafka.h"
#include "rdkafka_mock.h"

static volatile sig_atomic_t stop = 0;
static void on_sig(int sig) {
        (void)sig;
        stop = 1;
}

static rd_kafka_t *mk_client(const char *bootstrap, rd_kafka_type_t type) {
        char errstr[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        if (bootstrap &&
            rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                              sizeof(errstr)) != RD_KAFKA_CONF_OK) {
                fprintf(stderr, "conf: %s\n", errstr);
                exit(2);
        }
        rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
        rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
        if (!rk) {
                fprintf(stderr, "rd_kafka_new: %s\n", errstr);
                exit(2);
        }
        return rk;
}

static int cmd_mock(int argc, char **argv) {
        rd_kafka_t *rk = mk_client(NULL, RD_KAFKA_PRODUCER);
        rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, 1);
        if (!mc) {
                fprintf(stderr, "failed to create mock cluster\n");
                return 1;
        }
        for (int i = 0; i < argc; i++) {
                char name[256];
                int parts = 1;
                const char *colon = strrchr(argv[i], ':');
                if (colon) {
                        snprintf(name, sizeof(name), "%.*s",
                                 (int)(colon - argv[i]), argv[i]);
                        parts = atoi(colon + 1);
                } else {
                        snprintf(name, sizeof(name), "%s", argv[i]);
                }
                rd_kafka_resp_err_t err =
                    rd_kafka_mock_topic_create(mc, name, parts, 1);
                if (err) {
                        fprintf(stderr, "mock topic %s: %s\n", name,
                                rd_kafka_err2str(err));
                        return 1;
                }
        }
        printf("BOOTSTRAP %s\n", rd_kafka_mock_cluster_bootstraps(mc));
        fflush(stdout);

        signal(SIGTERM, on_sig);
        signal(SIGINT, on_sig);
        int watch_stdin = !isatty(0) && !getenv("RK_HELPER_IGNORE_STDIN");
        while (!stop) {
                if (watch_stdin) {
                        struct pollfd p = {.fd = 0, .events = POLLIN};
                        int r = poll(&p, 1, 200);
                        if (r > 0) {
                                char buf[256];
                                ssize_t n = read(0, buf, sizeof(buf));
                                if (n <= 0)
                                        break;
                        }
                } else {
                        usleep(200 * 1000);
                }
        }
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
        return 0;
}

static int admin_wait(rd_kafka_t *rk, rd_kafka_queue_t *q, int is_create) {
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
        if (!ev) {
                fprintf(stderr, "admin request timed out\n");
                return 1;
        }
        if (rd_kafka_event_error(ev)) {
                fprintf(stderr, "admin request failed: %s\n",
                        rd_kafka_event_error_string(ev));
                rd_kafka_event_destroy(ev);
                return 1;
        }
        const rd_kafka_topic_result_t **res;
        size_t cnt;
        if (is_create)
                res = rd_kafka_CreateTopics_result_topics(
                    rd_kafka_event_CreateTopics_result(ev), &cnt);
        else
                res = rd_kafka_DeleteTopics_result_topics(
                    rd_kafka_event_DeleteTopics_result(ev), &cnt);
        int rc = 0;
        for (size_t i = 0; i < cnt; i++) {
                rd_kafka_resp_err_t err = rd_kafka_topic_result_error(res[i]);
                if (err && !(is_create &&
                             err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)) {
                        fprintf(stderr, "%s: %s\n",
                                rd_kafka_topic_result_name(res[i]),
                                rd_kafka_err2str(err));
                        rc = 1;
                }
        }
        rd_kafka_event_destroy(ev);
        (void)rk;
        return rc;
}

static int cmd_create(const char *bootstrap, const char *topic, int parts) {
        char errstr[512];
        rd_kafka_t *rk = mk_client(bootstrap, RD_KAFKA_PRODUCER);
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_NewTopic_t *nt =
            rd_kafka_NewTopic_new(topic, parts, 1, errstr, sizeof(errstr));
        if (!nt) {
                fprintf(stderr, "NewTopic: %s\n", errstr);
                return 1;
        }
        rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
        int rc = admin_wait(rk, q, 1);
        rd_kafka_NewTopic_destroy(nt);
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
        return rc;
}

static int cmd_delete(const char *bootstrap, const char *topic) {
        rd_kafka_t *rk = mk_client(bootstrap, RD_KAFKA_PRODUCER);
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_DeleteTopic_t *dt = rd_kafka_DeleteTopic_new(topic);
        rd_kafka_DeleteTopics(rk, &dt, 1, NULL, q);
        int rc = admin_wait(rk, q, 0);
        rd_kafka_DeleteTopic_destroy(dt);
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
        return rc;
}

int main(int argc, char **argv) {
        if (argc >= 2 && !strcmp(argv[1], "mock"))
                return cmd_mock(argc - 2, argv + 2);
        if (argc == 5 && !strcmp(argv[1], "create-topic"))
                return cmd_create(argv[2], argv[3], atoi(argv[4]));
        if (argc == 4 && !strcmp(argv[1], "delete-topic"))
                return cmd_delete(argv[2], argv[3]);
        fprintf(stderr,
                "usage: %s mock [TOPIC:PARTITIONS ...]\n"
                "       %s create-topic BOOTSTRAP TOPIC PARTITIONS\n"
                "       %s delete-topic BOOTSTRAP TOPIC\n",
                argv[0], argv[0], argv[0]);
        return 2;
}
