import Foundation
import Ledger
import TDNTestSupport
import Testing

/// The strict JSON reader of usage batches, against Foundation's decoder.
@Suite("Strict JSON", .cpuBound)
struct StrictJSONTests {
    /// The strict reader replaced Foundation's JSONDecoder: on valid batches (random strings
    /// with escapes and non-ASCII, numbers in several spellings, optional fields) both read the
    /// same records. Seeded: `TDN_TEST_SEED=N` replays.
    @Test func strictReaderAgreesWithJSONDecoderOnValidBatches() throws {
        let seed =
            ProcessInfo.processInfo.environment["TDN_TEST_SEED"].flatMap(UInt64.init)
            ?? UInt64.random(in: 1...UInt64.max >> 1)
        var random = SeededRandom(state: seed)
        let pieces = ["a", "Z", "9", "-", "é", "e\u{301}", "日本", "🦙", "\"", "\\", "/", " ", "\u{2028}", "x_y"]
        func text() -> String {
            (0..<(1 + random.next() % 12)).map { _ in pieces[Int(random.next() % UInt64(pieces.count))] }.joined()
        }
        for round in 0..<300 {
            let records = (0..<(1 + random.next() % 8)).map { _ in
                UsageRecord(
                    id: text(), site: text(), tenant: text(), model: text(),
                    promptTokens: Int(random.next() % 100_000_001),
                    completionTokens: Int(random.next() % 1000), startedAt: Double(random.next() % 4_000_000_000) / 7,
                    endedAt: Double(random.next() % 4_000_000_000) + 0.25,
                    requestID: random.next() % 2 == 0 ? nil : text())
            }
            var encoder = JSONEncoder()
            if round % 2 == 0 {
                encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .withoutEscapingSlashes]
            }
            let body = try encoder.encode(UsageBatch(records: records))
            let reference = try JSONDecoder().decode(UsageBatch.self, from: body)
            let strict = try UsageBatch.decode(strict: Array(body))
            #expect(
                strict.records == reference.records,
                "seed \(seed), round \(round): \(String(decoding: body, as: UTF8.self))")
        }
    }

    /// Duplicate keys are found in objects of any size, in linear time (a quadratic scan of a
    /// 100,000-key object would take minutes).
    @Test func duplicateKeysInLargeObjects() throws {
        let keys = (0..<100_000).map { "\"k\($0)\":\($0)" }
        let unique = Array("{\(keys.joined(separator: ","))}".utf8)
        try StrictJSON.parse(unique) { (reader: inout StrictJSON) throws(JSONError) in try reader.skipValue() }
        let repeated = Array("{\(keys.joined(separator: ",")),\"k99\":1}".utf8)
        #expect(throws: JSONError.self) {
            try StrictJSON.parse(repeated) { (reader: inout StrictJSON) throws(JSONError) in try reader.skipValue() }
        }
        let early = Array(#"{"a":1,"b":2,"a":3}"#.utf8)
        #expect(throws: JSONError.self) {
            try StrictJSON.parse(early) { (reader: inout StrictJSON) throws(JSONError) in try reader.skipValue() }
        }
    }
}
