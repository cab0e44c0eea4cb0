import CoreMetrics
import Metrics
import Prometheus
import Synchronization
import TDNDNS

/// The process's metrics: swift-metrics API everywhere, exported in Prometheus text format by
/// swift-prometheus on the status server's `/metrics` (README "Monitoring").
enum MetricsSetup {
    static let registry = PrometheusCollectorRegistry()
    private static let bootstrapped = Mutex(false)

    /// Installs the Prometheus backend (once per process; later calls do nothing).
    static func bootstrapOnce() {
        bootstrapped.withLock { done in
            guard !done else { return }
            done = true
            var factory = PrometheusMetricsFactory(registry: registry)
            let probeBuckets: [Duration] = [
                .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                .milliseconds(100),
                .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5),
            ]
            factory.durationHistogramBuckets = [
                "tdn_probe_rtt_seconds": probeBuckets, "tdn_probe_schedule_lag_seconds": probeBuckets,
            ]
            MetricsSystem.bootstrap(factory)
        }
    }
}

/// Turns the DNS servers' query statistics into counters at scrape time: the query path counts
/// per thread (no locks), this adds what is new since the last scrape.
final class QueryStatsExporter: Sendable {
    private let stats: QueryStats
    private let exported = Mutex(QueryStats.Totals())

    init(stats: QueryStats) { self.stats = stats }

    func export() {
        let totals = stats.read()
        exported.withLock { last in
            for (key, value) in totals.queries {
                let delta = value - (last.queries[key] ?? 0)
                guard delta > 0 else { continue }
                Counter(
                    label: "tdn_dns_queries_total",
                    dimensions: [("transport", key.transport), ("qtype", key.qtype), ("rcode", key.rcode)]
                )
                .increment(by: Int64(delta))
            }
            for (transport, value) in totals.dropped {
                let delta = value - (last.dropped[transport] ?? 0)
                if delta > 0 {
                    Counter(label: "tdn_dns_dropped_total", dimensions: [("transport", transport)]).increment(
                        by: Int64(delta))
                }
            }
            for (key, value) in totals.steered {
                let delta = value - (last.steered[key] ?? 0)
                guard delta > 0 else { continue }
                let model = String(key.name.prefix { $0 != "." })
                for site in key.sites.isEmpty ? ["none"] : key.sites {
                    Counter(label: "tdn_steered_answers_total", dimensions: [("model", model), ("site", site)])
                        .increment(by: Int64(delta))
                }
            }
            last = totals
        }
    }
}
