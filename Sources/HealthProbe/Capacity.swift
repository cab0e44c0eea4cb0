/// One series that contributes to a site's load: its samples (summed over label sets) divided by
/// `full` give a fraction, weighted by `weight`.
public struct LoadSignal: Hashable, Sendable {
    /// Names to try in order; the first present is used (engines rename series across versions).
    public var names: [String]
    /// The value at which this signal alone means "full".
    public var full: Double
    public var weight: Double

    public init(names: [String], full: Double, weight: Double = 1) {
        self.names = names
        self.full = full
        self.weight = weight
    }
}

/// Turns an engine's `/metrics` into a load figure between 0 and 1.
public struct CapacityModel: Hashable, Sendable {
    public var signals: [LoadSignal]

    public init(signals: [LoadSignal]) { self.signals = signals }

    /// vLLM's series: requests running and waiting, and KV-cache use (named
    /// `vllm:gpu_cache_usage_perc` before v0.8, `vllm:kv_cache_usage_perc` after; a fraction).
    /// The load is the largest of the weighted fractions: any one resource running out is full.
    public static let vLLM = CapacityModel(signals: [
        LoadSignal(names: ["vllm:num_requests_running"], full: 256),
        LoadSignal(names: ["vllm:num_requests_waiting"], full: 32),
        LoadSignal(names: ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"], full: 0.95),
    ])

    /// One signal's contribution: the series used (nil when none was present) and its sum.
    public struct Part: Hashable, Sendable {
        public var series: String?
        public var value: Double
    }

    /// What went into a load figure, for `/status`.
    public struct Reading: Hashable, Sendable {
        public var load: Double
        public var parts: [Part]
        public init(load: Double, parts: [Part]) {
            self.load = load
            self.parts = parts
        }
    }

    /// Values no real gauge or counter of an engine takes: such a scrape is refused.
    public static let absurd = 1e12

    /// Why a scrape gives no load figure.
    public struct Refusal: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// The load from a scrape. A signal whose series is missing counts as full: an engine that
    /// stops reporting is not assumed empty. NaN counts as full for the same reason. A negative,
    /// infinite or absurdly large value is no figure at all: the scrape is refused (and a site
    /// without a good figure counts as full), never read as an idle engine.
    public func load(from samples: [MetricSample]) throws(Refusal) -> Reading {
        var worst = 0.0
        var parts: [Part] = []
        for signal in signals {
            guard let name = signal.names.first(where: { name in samples.contains { $0.name == name } }) else {
                parts.append(Part(series: nil, value: .nan))
                worst = max(worst, 1)
                continue
            }
            for sample in samples where sample.name == name && !sample.value.isNaN {
                guard sample.value >= 0, sample.value.isFinite, sample.value < Self.absurd else {
                    throw Refusal(description: "\(name) = \(sample.value): not a plausible load figure")
                }
            }
            let total = samples.filter { $0.name == name }.reduce(0.0) { $0 + $1.value }
            parts.append(Part(series: name, value: total))
            let fraction = total.isNaN ? 1 : min(1, max(0, total / signal.full)) * signal.weight
            worst = max(worst, min(1, fraction))
        }
        return Reading(load: worst, parts: parts)
    }
}
