import ConfigFile

/// How a site is probed, as the policy's `probe-defaults` and each site's `probe:` say (README
/// "Probes"). Read here and only here: the policy keeps these sections as written, the daemon
/// hands them over. A site with none of `http`, `tcp`, `metrics`, `models` is not probed and
/// counts as up.
public struct ProbeSettings: Hashable, Sendable {
    /// GET this URL; healthy when the status is in `expect` and the body contains `body`.
    public var http: String?
    public var expect: [Int] = [200]
    public var body: String?
    /// `host:port` to connect to.
    public var tcp: String?
    /// Prometheus text exposition to turn into a load figure.
    public var metrics: String?
    public var capacity = CapacityModel.vLLM
    /// An OpenAI-compatible `/v1/models`: the site gets only the models it lists.
    public var models: String?
    public var interval: Double = 5
    public var timeout: Double = 2
    /// Each probe starts up to this many seconds early or late (nil: a tenth of the interval).
    public var jitter: Double?
    /// Capacity and model lists older than this count as full and empty (nil: 3 × interval).
    public var stale: Double?
    /// Rise, fall and the water marks; `staleAfter` comes from `stale`.
    public var rules = HealthRules()

    public init() {}

    public var isConfigured: Bool { http != nil || tcp != nil || metrics != nil || models != nil }
    public var effectiveJitter: Double { jitter ?? interval / 10 }
    public var effectiveStale: Double { stale ?? 3 * interval }

    /// What the probes of `site` run.
    public func target(site: String) -> ProbeTarget {
        var rules = rules
        rules.staleAfter = effectiveStale
        return ProbeTarget(
            site: site, http: http.map { ProbeTarget.HTTPCheck(url: $0, expect: expect, body: body) }, tcp: tcp,
            metrics: metrics, capacity: capacity, models: models, interval: interval, timeout: timeout,
            jitter: effectiveJitter, rules: rules)
    }

    /// The settings of `sections` applied in order over the defaults, every problem recorded in
    /// `reader` at its line. URLs and `tcp` may name `{site}`, `{ipv4}` and `{ipv6}`: replaced
    /// from `placeholders` (`{ipv6}` in brackets); one the site has no value for is an error of
    /// the site's `probe` (`key`, at `line`).
    public static func read(
        _ sections: [ConfigSection], placeholders: [String: String], key: String, line: Int,
        into reader: inout ConfigReader
    ) -> ProbeSettings {
        var settings = ProbeSettings()
        for section in sections { settings.apply(section, &reader) }
        func expand(_ text: String?) -> String? {
            guard var text else { return nil }
            for (name, value) in placeholders { text = text.replacingAll(name, with: value) }
            if text.contains("{ipv4}") || text.contains("{ipv6}") {
                reader.add([
                    ConfigError(
                        file: reader.file, line: line, key: key,
                        message: "'\(text)' names an address family the site has none of")
                ])
            }
            return text
        }
        settings.http = expand(settings.http)
        settings.tcp = expand(settings.tcp)
        settings.metrics = expand(settings.metrics)
        settings.models = expand(settings.models)
        return settings
    }

    /// The keys of one section over these settings; the combination is checked after each.
    mutating func apply(_ section: ConfigSection, _ reader: inout ConfigReader) {
        let context = section.key
        let node = section.value
        let settings = reader.entries(
            node, context,
            known: [
                "http", "expect", "body", "tcp", "metrics", "capacity", "high-water", "low-water", "models",
                "interval", "timeout", "jitter", "stale", "rise", "fall",
            ])
        for key in ["http", "metrics", "models"] {
            if let url = reader.string(settings[key], "\(context).\(key)") {
                if !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
                    reader.fail(settings[key], "\(context).\(key)", "expected an http:// or https:// URL")
                }
                switch key {
                case "http": http = url
                case "metrics": metrics = url
                default: models = url
                }
            }
        }
        if let node = settings["expect"] {
            var codes: [Int] = []
            for item in node.items {
                if let code = item.int, (100...599).contains(code) {
                    codes.append(code)
                } else {
                    reader.fail(item, "\(context).expect", "expected HTTP status codes such as 200")
                }
            }
            expect = codes
        }
        if let text = reader.string(settings["body"], "\(context).body") { body = text }
        if let target = reader.string(settings["tcp"], "\(context).tcp") {
            let port = target.split(separator: ":").last.flatMap { Int($0) }
            if !target.contains(":") || port == nil || !(1...65535).contains(port!) {
                reader.fail(settings["tcp"], "\(context).tcp", "expected HOST:PORT (IPv6 as [2001:db8::1]:8000)")
            }
            tcp = target
        }
        if let node = settings["capacity"] { readCapacity(node, "\(context).capacity", &reader) }
        if let value = reader.number(settings["high-water"], "\(context).high-water", 0...1) {
            rules.highWater = value
        }
        if let value = reader.number(settings["low-water"], "\(context).low-water", 0...1) { rules.lowWater = value }
        if rules.lowWater > rules.highWater { reader.fail(node, context, "low-water is above high-water") }
        if let value = reader.number(settings["interval"], "\(context).interval", 0.1...3600) { interval = value }
        if let value = reader.number(settings["timeout"], "\(context).timeout", 0.01...600) { timeout = value }
        if let value = reader.number(settings["jitter"], "\(context).jitter", 0...3600) { jitter = value }
        if let value = reader.number(settings["stale"], "\(context).stale", 0.1...86400) { stale = value }
        if let value = reader.number(settings["rise"], "\(context).rise", 1...100) { rules.rise = Int(value) }
        if let value = reader.number(settings["fall"], "\(context).fall", 1...100) { rules.fall = Int(value) }
        if timeout > interval { reader.fail(node, context, "timeout is longer than interval") }
        if effectiveJitter >= interval / 2 { reader.fail(node, context, "jitter must be under half the interval") }
    }

    /// `vllm`, or a list of `{series, full, weight}`.
    mutating func readCapacity(_ node: ConfigValue, _ context: String, _ reader: inout ConfigReader) {
        if node.string == "vllm" {
            capacity = .vLLM
            return
        }
        guard let items = node.sequence else {
            reader.fail(node, context, "expected vllm or a list of {series, full, weight}")
            return
        }
        var signals: [LoadSignal] = []
        for item in items {
            let fields = reader.entries(item, context, known: ["series", "full", "weight"])
            guard let names = reader.strings(fields["series"], "\(context).series"),
                let full = reader.number(fields["full"], "\(context).full", 1e-9...1e15)
            else {
                reader.fail(item, context, "each signal needs series and full")
                continue
            }
            signals.append(
                LoadSignal(
                    names: names, full: full, weight: reader.number(fields["weight"], "\(context).weight", 0...100) ?? 1
                ))
        }
        capacity = CapacityModel(signals: signals)
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = Substring(self)
        while let range = rest.range(of: target) {
            result += rest[..<range.lowerBound] + replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
