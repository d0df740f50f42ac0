using System.Globalization;
using System.Text;

namespace Lora.Core.IO;

/// Names read back from files this program did not necessarily write (a results folder from a
/// clone, a downloaded adapter): made safe to print on a terminal and to use as one file name.
public static class SafeName
{
    /// Control and format characters (NUL, ESC of a terminal escape sequence, bidirectional
    /// overrides) shown as \uXXXX; everything else unchanged.
    public static string Printable(string s)
    {
        if (!s.Any(IsHidden)) return s;
        var sb = new StringBuilder(s.Length + 8);
        foreach (var c in s)
            if (IsHidden(c)) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
            else sb.Append(c);
        return sb.ToString();
    }

    /// One file name inside a folder: printable, no path separator, not "", "." or "..", and not
    /// starting with a dot (which would hide it or make it a temporary file's name).
    public static string ForFile(string s)
    {
        var p = Printable(s.Replace('/', '_').Replace('\\', '_'));
        if (p.Length == 0 || p.StartsWith('.')) p = "_" + p;
        return p;
    }

    /// Whether a name given in a spec may be used as it is (the spec's check reports the others).
    public static bool IsClean(string s) => !s.Any(IsHidden);

    static bool IsHidden(char c) => char.IsControl(c) || CharUnicodeInfo.GetUnicodeCategory(c) is UnicodeCategory.Format
        or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator;
}
