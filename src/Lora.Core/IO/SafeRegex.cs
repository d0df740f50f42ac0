using System.Collections.Concurrent;
using System.Text.RegularExpressions;

namespace Lora.Core.IO;

/// Regular expressions that come from outside (adapter configs' target_modules and `re:` pattern
/// keys, specs): matched by .NET's non-backtracking engine, whose time is linear in the input, so a
/// pattern such as `(a+)+$` cannot spin a core. A pattern that engine cannot run (backreferences,
/// lookarounds) falls back to the backtracking engine with a time limit; running out of it is an
/// error naming the pattern.
public static class SafeRegex
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(1);
    static readonly ConcurrentDictionary<string, Regex> cache = new(StringComparer.Ordinal);

    /// The compiled pattern; ArgumentException (naming it) when it is not a valid expression.
    public static Regex Create(string pattern) => cache.GetOrAdd(pattern, p =>
    {
        try { return new Regex(p, RegexOptions.NonBacktracking | RegexOptions.CultureInvariant, Timeout); }
        catch (NotSupportedException) { return new Regex(p, RegexOptions.CultureInvariant, Timeout); }
    });

    public static bool IsMatch(string pattern, string input)
    {
        try { return Create(pattern).IsMatch(input); }
        catch (RegexMatchTimeoutException)
        {
            throw new ArgumentException($"the regular expression '{pattern}' took more than {Timeout.TotalSeconds:0} s to match '{input}' (catastrophic backtracking): simplify it");
        }
    }
}
