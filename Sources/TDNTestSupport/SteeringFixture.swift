import Foundation

/// The steering tests' zone, policy and geo database (two edges in the EU, one in the US; the
/// operator's 5.9.128.0/17 splits the DE network), shared by the in-process and process tests.
public enum SteeringFixture {
    public static let zone = ZoneFixture.apex(ttl: 300)

    public static let policy = """
        zone: t.example
        jurisdictions: {eu: [DE, FR], us: [US]}
        rules:
          - {clients-in: eu, served-in: [eu]}
          - {clients-in: us, served-in: [us]}
        unknown-location: {served-in: [us]}
        denial: {mode: empty, ttl: 5}
        near-equal-ms: 0
        sites:
          fra: {tier: edge, location: {lat: 50.1, lon: 8.7, country: DE}, jurisdiction: eu, ipv4: [192.0.2.1], ipv6: ["2001:db8::1"]}
          par: {tier: edge, location: {lat: 48.9, lon: 2.4, country: FR}, jurisdiction: eu, ipv4: [192.0.2.2], ipv6: ["2001:db8::2"]}
          nyc: {tier: edge, location: {lat: 40.7, lon: -74.0, country: US}, jurisdiction: us, ipv4: [198.51.100.1], ipv6: ["2001:db8:1::1"]}
        models:
          small: {size: 7b, answers: 1, ttl: 20}
          sovereign: {size: 7b, served-in: [eu], answers: 1}
        networks:
          - {name: metro-paris, prefix: 5.9.128.0/17, country: FR, lat: 48.9, lon: 2.4}
          - {name: lab, prefix: 127.0.0.0/8, country: FR, lat: 48.9, lon: 2.4}
        """

    public static let networks = "5.9.0.0/16,DE\n8.8.8.0/24,US\n2a01:4f8::/32,DE\n"

    /// The test MMDB, built once by the project's script.
    public static let database: String = {
        let directory = makeTemporaryDirectory()
        writeFile(directory + "/networks.csv", networks)
        // Once per test process, before the first test that needs it: a plain wait is fine here.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "python3", projectRoot + "/scripts/build-geoip.py", "--networks", directory + "/networks.csv", "--out",
            directory + "/test.mmdb",
        ]
        try! process.run()
        process.waitUntilExit()
        precondition(process.terminationStatus == 0, "scripts/build-geoip.py failed")
        return directory + "/test.mmdb"
    }()
}

/// The source tree's root (where `scripts/` and the demo configuration are).
public let projectRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path
