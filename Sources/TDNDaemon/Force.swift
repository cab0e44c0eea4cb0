import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore

/// `tdnd force SITE[,SITE…] up|down|drain|auto`: forces sites' state on a running tdnd through
/// its admin endpoint (the status server, authenticated with the configured admin token).
/// Several sites (comma-separated) change at once: one re-steering.
struct Force: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Force a probed site up, down or to drain on a running tdnd (auto: let the probes decide again).")

    @Argument(help: "The site id, as in the policy file; several, comma-separated, change at once.")
    var site: String

    @Argument(help: "up, down, drain or auto.")
    var state: String

    @Option(help: "The admin token (default: admin-token of the configuration).")
    var token: String?

    @OptionGroup var options: CommonOptions

    func run() async throws {
        let config = try options.resolveOrExit()
        guard ["up", "down", "drain", "auto"].contains(state) else {
            throw ValidationError("state must be up, down, drain or auto")
        }
        guard let status = config.status else {
            throw ValidationError("the status server is off (status: off), so there is no admin endpoint")
        }
        guard let token = token ?? config.adminToken else {
            throw ValidationError("no admin token: pass --token or set admin-token in the configuration")
        }
        let host = status.host.contains(":") ? "[\(status.host)]" : status.host
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+#")
        let url: String
        if site.contains(",") {
            let escaped = site.addingPercentEncoding(withAllowedCharacters: allowed) ?? site
            url = "http://\(host):\(status.port)/admin/force?state=\(state)&sites=\(escaped)"
        } else {
            let escaped = site.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? site
            url = "http://\(host):\(status.port)/admin/sites/\(escaped)/force?state=\(state)"
        }
        let outcome = await Result(catching: {
            try await httpPost(url, body: Data(), headers: ["Authorization": "Bearer \(token)"])
        })
        switch outcome {
        case .success((200, let body)):
            print(body, terminator: "")
        case .success((let code, let body)):
            FileHandle.standardError.write(Data("tdnd force: HTTP \(code): \(body)".utf8))
            throw ExitCode(1)
        case .failure(let error):
            FileHandle.standardError.write(Data("tdnd force: cannot reach \(status): \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// One HTTP POST with AsyncHTTPClient: the status code and the body as text.
func httpPost(_ url: String, body: Data, headers: [String: String]) async throws -> (Int, String) {
    var request = HTTPClientRequest(url: url)
    request.method = .POST
    for (name, value) in headers { request.headers.add(name: name, value: value) }
    request.body = .bytes(ByteBuffer(data: body))
    let client = HTTPClient(eventLoopGroupProvider: .singleton)
    let outcome = await Result(catching: {
        let response = try await client.execute(request, timeout: .seconds(10))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 1 << 20)))
    })
    // Shut down whatever happened: an HTTPClient must not be dropped running.
    try? await client.shutdown()
    return try outcome.get()
}

extension Result where Failure == Error {
    /// The outcome of an async throwing call.
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
