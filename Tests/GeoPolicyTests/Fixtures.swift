import Foundation
import GeoPolicy

enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static let policy = """
        zone: t.example
        jurisdictions:
          eu: [DE, FR]
          us: [US]
        rules:
          - clients-in: eu
            served-in: [eu]
        unknown-location:
          served-in: [us]
        denial: {mode: empty, ttl: 5}
        near-equal-ms: 0
        sites:
          fra: {tier: edge, location: {lat: 50.1, lon: 8.7, country: DE}, jurisdiction: eu, ipv4: [192.0.2.1], ipv6: ["2001:db8::1"], max-model: 13b}
          par: {tier: edge, location: {lat: 48.9, lon: 2.4, country: FR}, jurisdiction: eu, ipv4: [192.0.2.2], ipv6: ["2001:db8::2"], max-model: 13b}
          ber: {tier: regional, location: {lat: 52.5, lon: 13.4, country: DE}, jurisdiction: eu, ipv4: [192.0.2.3], ipv6: ["2001:db8::3"], max-model: 70b}
          nyc: {tier: edge, location: {lat: 40.7, lon: -74.0, country: US}, jurisdiction: us, ipv4: [198.51.100.1], ipv6: ["2001:db8:1::1"], max-model: 13b}
          dfw: {tier: central, location: {lat: 32.8, lon: -96.8, country: US}, jurisdiction: us, ipv4: [198.51.100.2], ipv6: ["2001:db8:1::2"], max-model: 405b}
        models:
          small: {size: 7b, answers: 1}
          big: {size: 70b, tiers: [regional, central], answers: 1}
          sovereign: {size: 7b, served-in: [eu], answers: 1}
        tenants:
          acme: {served-in: [eu]}
        networks:
          - {name: lab, prefix: 10.0.0.0/8, country: DE, lat: 50.1, lon: 8.7}
          - {name: metro-paris, prefix: 5.9.128.0/17, country: FR, lat: 48.9, lon: 2.4}
        """

    static func loadPolicy(_ text: String = policy) throws -> Policy {
        try PolicyLoader.parse(text, file: "policy.yaml").get()
    }

    static let frankfurt = Location(
        country: "DE", continent: "EU", coordinates: Coordinates(latitude: 50.1, longitude: 8.7))
    static let paris = Location(
        country: "FR", continent: "EU", coordinates: Coordinates(latitude: 48.9, longitude: 2.4))
    static let newYork = Location(
        country: "US", continent: "NA", coordinates: Coordinates(latitude: 40.7, longitude: -74.0))
    static let tokyo = Location(
        country: "JP", continent: "AS", coordinates: Coordinates(latitude: 35.7, longitude: 139.7))

    /// A small MMDB made by the project's own builder (scripts/build-geoip.py).
    static func database(_ networks: [String]) throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tdn-geo-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let csv = directory.appendingPathComponent("networks.csv")
        try networks.joined(separator: "\n").write(to: csv, atomically: true, encoding: .utf8)
        let out = directory.appendingPathComponent("test.mmdb").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", root.appendingPathComponent("scripts/build-geoip.py").path, "--networks", csv.path, "--out", out,
        ]
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CocoaError(.fileWriteUnknown) }
        return out
    }
}
