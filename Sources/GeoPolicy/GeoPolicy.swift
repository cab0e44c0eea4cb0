import CMaxMindDB

/// Steering policy: sites, models, jurisdictions and the locator (to be built; see the README's
/// "Not built yet").
public enum GeoPolicy {
    /// The version of the libmaxminddb the locator is linked against.
    public static var maxMindLibraryVersion: String { String(cString: MMDB_lib_version()) }
}
