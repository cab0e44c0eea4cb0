#define _GNU_SOURCE
#include "CSocketIO.h"
#include <string.h>
#include <sys/time.h>

#define TDN_MAX_BATCH 64

/* One message of a batch: one buffer, and the peer's address. */
static void tdn_message(struct mmsghdr *msg, struct iovec *iov, void *buffer, size_t length,
                        struct sockaddr_storage *peer, socklen_t peer_length) {
    iov->iov_base = buffer;
    iov->iov_len = length;
    memset(&msg->msg_hdr, 0, sizeof(struct msghdr));
    msg->msg_hdr.msg_iov = iov;
    msg->msg_hdr.msg_iovlen = 1;
    msg->msg_hdr.msg_name = peer;
    msg->msg_hdr.msg_namelen = peer_length;
}

int tdn_recv_batch(int fd, tdn_datagram *slots, unsigned int count) {
    struct mmsghdr msgs[TDN_MAX_BATCH];
    struct iovec iovs[TDN_MAX_BATCH];
    if (count > TDN_MAX_BATCH) count = TDN_MAX_BATCH;
    for (unsigned int i = 0; i < count; i++) {
        tdn_message(&msgs[i], &iovs[i], slots[i].buffer, slots[i].capacity, &slots[i].peer,
                    sizeof(struct sockaddr_storage));
    }
    int n = recvmmsg(fd, msgs, count, MSG_WAITFORONE, NULL);
    for (int i = 0; i < n; i++) {
        slots[i].length = msgs[i].msg_len;
        slots[i].peer_length = msgs[i].msg_hdr.msg_namelen;
        /* A datagram larger than the buffer arrives cut short: flag it by length 0. */
        if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) slots[i].length = 0;
    }
    return n;
}

int tdn_send_batch(int fd, tdn_datagram *slots, unsigned int count) {
    struct mmsghdr msgs[TDN_MAX_BATCH];
    struct iovec iovs[TDN_MAX_BATCH];
    if (count > TDN_MAX_BATCH) count = TDN_MAX_BATCH;
    unsigned int used = 0;
    for (unsigned int i = 0; i < count; i++) {
        if (slots[i].reply_length == 0) continue;
        tdn_message(&msgs[used], &iovs[used], slots[i].reply, slots[i].reply_length, &slots[i].peer,
                    slots[i].peer_length);
        used++;
    }
    count = used;
    unsigned int sent = 0;
    while (sent < count) {
        int n = sendmmsg(fd, msgs + sent, count - sent, 0);
        if (n <= 0) {
            /* Skip the datagram that failed (e.g. an unreachable peer) and go on. */
            sent++;
            continue;
        }
        sent += (unsigned int)n;
    }
    return (int)sent;
}

int tdn_configure_udp_socket(int fd, int ipv6, int timeout_ms) {
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) return -1;
    if (ipv6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) return -1;
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) return -1;
    return 0;
}
