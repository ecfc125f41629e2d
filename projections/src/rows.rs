//! Statements that write many rows at once: a batch's rows go in a few multi-row statements of
//! a few cached shapes, not one statement (and, on SQLite, two thread hops) each.

use crate::runtime::Tx;

/// The most rows one statement writes or reads. Statements are built for powers of two up to
/// this, so a connection caches at most eight shapes of each.
pub const ROWS_PER_STATEMENT: usize = 128;

/// How many rows the next statement takes out of `remaining`: the largest power of two that
/// fits, at most [`ROWS_PER_STATEMENT`].
pub fn statement_rows(remaining: usize) -> usize {
    let power = 1usize << (usize::BITS - 1 - remaining.max(1).leading_zeros());
    power.min(ROWS_PER_STATEMENT)
}

/// `rows` parenthesized lists of `width` parameters: numbered (`$1`) for PostgreSQL, plain `?`
/// for SQLite, whose driver looks each numbered parameter's name up in a list as long as the
/// statement's (so thousands of numbered parameters bind in quadratic time).
pub fn parameter_rows(numbered: bool, rows: usize, width: usize) -> String {
    let row = |r: usize| {
        let params: Vec<String> =
            (1..=width).map(|n| if numbered { format!("${}", r * width + n) } else { "?".into() }).collect();
        format!("({})", params.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// Whether statements in `tx` take numbered parameters.
pub fn numbered(tx: &Tx<'_>) -> bool {
    matches!(tx, Tx::Postgres(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_written_in_power_of_two_statements_that_add_up() {
        for total in [1usize, 2, 3, 7, 100, 128, 129, 1000] {
            let mut sizes = Vec::new();
            let mut remaining = total;
            while remaining > 0 {
                let take = statement_rows(remaining);
                assert!(take.is_power_of_two() && take <= ROWS_PER_STATEMENT && take <= remaining);
                sizes.push(take);
                remaining -= take;
            }
            assert_eq!(sizes.iter().sum::<usize>(), total, "{sizes:?}");
        }
        assert_eq!(statement_rows(100), 64);
        assert_eq!(statement_rows(1000), ROWS_PER_STATEMENT);
    }

    #[test]
    fn parameter_rows_number_every_parameter_once_or_leave_them_plain() {
        assert_eq!(parameter_rows(true, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(parameter_rows(false, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(parameter_rows(true, 1, 3), "($1, $2, $3)");
    }
}
