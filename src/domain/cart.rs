//! The cart: product ids and quantities only (names and prices are read from the catalog when
//! shown), small enough to live in a cookie.

use serde::{Deserialize, Serialize};

use super::catalog::ProductId;

/// Units of one product in a cart line: 1 to 99. Read back from a session, too, only a
/// number in that range is a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32")]
pub struct Quantity(u32);

impl TryFrom<u32> for Quantity {
    type Error = QuantityError;

    fn try_from(n: u32) -> Result<Self, Self::Error> {
        Self::new(n).ok_or(QuantityError::OutOfRange)
    }
}

impl Quantity {
    /// Most units of one product per cart line.
    pub const MAX: u32 = 99;

    /// Parses a form value of 1 to 99.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        match parse_count(input)? {
            0 => Err(QuantityError::OutOfRange),
            n => Self::new(n).ok_or(QuantityError::OutOfRange),
        }
    }

    /// Parses a form value of 0 to 99, where 0 means "remove".
    pub fn parse_or_zero(input: &str) -> Result<Option<Self>, QuantityError> {
        match parse_count(input)? {
            0 => Ok(None),
            n => Self::new(n).map(Some).ok_or(QuantityError::OutOfRange),
        }
    }

    /// A quantity of `n` if it is 1 to 99.
    pub fn new(n: u32) -> Option<Self> {
        (1..=Self::MAX).contains(&n).then_some(Self(n))
    }

    /// The number of units.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Why a quantity was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a whole number at all.
    #[error("The quantity must be a whole number.")]
    NotANumber,
    /// A number, but outside what a line allows.
    #[error("The quantity must be between 1 and 99.")]
    OutOfRange,
}

fn parse_count(input: &str) -> Result<u32, QuantityError> {
    let input = input.trim();
    if let Some(digits) = input.strip_prefix('-') {
        return if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            Err(QuantityError::OutOfRange)
        } else {
            Err(QuantityError::NotANumber)
        };
    }
    if input.is_empty() || !input.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QuantityError::NotANumber);
    }
    // Any run of digits is a number; a huge one is simply out of range.
    input.parse::<u32>().or(Err(QuantityError::OutOfRange))
}

/// One line: a product and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartLine {
    /// The product.
    pub product_id: ProductId,
    /// How many.
    pub quantity: Quantity,
}

/// The cart as stored in the session: `{"rev":N,"lines":[[id,qty],...]}` in compact form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    /// Grows with every change, so a checkout can be recognised when submitted twice.
    #[serde(rename = "r", default)]
    rev: u64,
    #[serde(rename = "l", default)]
    lines: Vec<(ProductId, Quantity)>,
}

/// Why a cart change was refused (the cart is then unchanged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    /// The cart already has the most distinct products allowed.
    #[error(
        "Your cart already holds {0} different products, the most it can. Remove one to add another."
    )]
    TooManyLines(usize),
    /// The line would exceed 99 units.
    #[error("A cart line holds at most 99 units; you have {0} already.")]
    LineFull(u32),
    /// The line is not in the cart.
    #[error("That product is not in your cart.")]
    NotInCart,
}

/// What merging one cart into another did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CartMerge {
    /// Lines taken over (added or joined).
    pub merged: usize,
    /// Lines left out because the cart was full.
    pub dropped: usize,
    /// Lines whose quantity was capped at 99.
    pub capped: usize,
}

impl Cart {
    /// Adds every line of `other`: quantities of the same product add up, capped at 99 a line;
    /// lines past `max_lines` are left out.
    pub fn merge(&mut self, other: &Cart, max_lines: usize) -> CartMerge {
        let mut report = CartMerge::default();
        for &(product, quantity) in &other.lines {
            if let Some((_, line)) = self.lines.iter_mut().find(|(id, _)| *id == product) {
                let sum = line.get() + quantity.get();
                if sum > Quantity::MAX {
                    report.capped += 1;
                }
                *line = Quantity(sum.min(Quantity::MAX));
                report.merged += 1;
            } else if self.lines.len() < max_lines {
                self.lines.push((product, quantity));
                report.merged += 1;
            } else {
                report.dropped += 1;
            }
        }
        self.rev += 1;
        report
    }

    /// The lines in the order they were added.
    pub fn lines(&self) -> impl Iterator<Item = CartLine> + '_ {
        self.lines.iter().map(|&(product_id, quantity)| CartLine {
            product_id,
            quantity,
        })
    }

    /// Number of distinct products.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the cart is empty.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The revision (changes so far).
    pub fn rev(&self) -> u64 {
        self.rev
    }

    /// Units of `product` in the cart.
    pub fn quantity_of(&self, product: ProductId) -> u32 {
        self.lines
            .iter()
            .find(|(id, _)| *id == product)
            .map_or(0, |(_, q)| q.get())
    }

    /// Adds `quantity` units of `product`, joining an existing line.
    pub fn add(
        &mut self,
        product: ProductId,
        quantity: Quantity,
        max_lines: usize,
    ) -> Result<(), CartError> {
        if let Some((_, line)) = self.lines.iter_mut().find(|(id, _)| *id == product) {
            *line = Quantity::new(line.get() + quantity.get())
                .ok_or(CartError::LineFull(line.get()))?;
        } else {
            if self.lines.len() >= max_lines {
                return Err(CartError::TooManyLines(self.lines.len()));
            }
            self.lines.push((product, quantity));
        }
        self.rev += 1;
        Ok(())
    }

    /// Sets the units of a line already in the cart; `None` removes it.
    pub fn set(&mut self, product: ProductId, quantity: Option<Quantity>) -> Result<(), CartError> {
        let index = self
            .lines
            .iter()
            .position(|(id, _)| *id == product)
            .ok_or(CartError::NotInCart)?;
        match quantity {
            Some(q) => self.lines[index].1 = q,
            None => {
                self.lines.remove(index);
            }
        }
        self.rev += 1;
        Ok(())
    }

    /// Empties the cart (the revision still grows).
    pub fn clear(&mut self) {
        self.lines.clear();
        self.rev += 1;
    }

    /// Takes out what `ordered` (this cart at an earlier revision) held, once it is ordered:
    /// unchanged since, the cart empties; changed since (a parallel add), only the ordered
    /// units leave and the rest stays.
    pub fn take_ordered(&mut self, ordered: &Cart) {
        if self.rev == ordered.rev {
            self.clear();
            return;
        }
        for (product, bought) in &ordered.lines {
            if let Some(index) = self.lines.iter().position(|(id, _)| id == product) {
                match Quantity::new(self.lines[index].1.get().saturating_sub(bought.get())) {
                    Some(left) => self.lines[index].1 = left,
                    None => {
                        self.lines.remove(index);
                    }
                }
            }
        }
        self.rev += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: &str) -> ProductId {
        ProductId::parse(n).expect("id")
    }

    fn q(n: u32) -> Quantity {
        Quantity::new(n).expect("quantity")
    }

    #[test]
    fn quantities_are_whole_numbers_from_1_to_99() {
        assert_eq!(Quantity::parse("1").map(Quantity::get), Ok(1));
        assert_eq!(Quantity::parse(" 99 ").map(Quantity::get), Ok(99));
        assert_eq!(Quantity::parse("0"), Err(QuantityError::OutOfRange));
        assert_eq!(Quantity::parse("100"), Err(QuantityError::OutOfRange));
        assert_eq!(Quantity::parse("-3"), Err(QuantityError::OutOfRange));
        assert_eq!(
            Quantity::parse("99999999999999999999"),
            Err(QuantityError::OutOfRange)
        );
        for bad in ["", "two", "1.5", "1e3", "+1", "--1", "0x10"] {
            assert_eq!(
                Quantity::parse(bad),
                Err(QuantityError::NotANumber),
                "{bad:?}"
            );
        }
        assert_eq!(Quantity::parse_or_zero("0"), Ok(None));
    }

    #[test]
    fn adding_joins_an_existing_line() {
        let mut cart = Cart::default();
        cart.add(id("3"), q(2), 10).expect("add");
        cart.add(id("3"), q(5), 10).expect("add");
        assert_eq!(cart.len(), 1);
        assert_eq!(cart.quantity_of(id("3")), 7);
        assert_eq!(cart.rev(), 2);
    }

    #[test]
    fn refused_changes_leave_the_cart_as_it_was() {
        let mut cart = Cart::default();
        cart.add(id("1"), q(98), 2).expect("add");
        cart.add(id("2"), q(1), 2).expect("add");
        let before = cart.clone();
        assert_eq!(cart.add(id("1"), q(2), 2), Err(CartError::LineFull(98)));
        assert_eq!(cart.add(id("3"), q(1), 2), Err(CartError::TooManyLines(2)));
        assert_eq!(cart.set(id("9"), Some(q(1))), Err(CartError::NotInCart));
        assert_eq!(cart, before);
    }

    #[test]
    fn merging_adds_up_caps_at_99_and_keeps_the_line_bound() {
        let mut mine = Cart::default();
        mine.add(id("1"), q(90), 2).expect("add");
        let mut guest = Cart::default();
        guest.add(id("1"), q(20), 5).expect("add");
        guest.add(id("2"), q(3), 5).expect("add");
        guest.add(id("3"), q(1), 5).expect("add");
        let report = mine.merge(&guest, 2);
        assert_eq!(mine.quantity_of(id("1")), 99);
        assert_eq!(mine.quantity_of(id("2")), 3);
        assert_eq!(mine.quantity_of(id("3")), 0, "past the line bound");
        assert_eq!(
            report,
            CartMerge {
                merged: 2,
                dropped: 1,
                capped: 1
            }
        );
    }

    #[test]
    fn ordering_takes_out_only_what_was_ordered() {
        let mut ordered = Cart::default();
        ordered.add(id("1"), q(2), 5).expect("add");
        let mut same = ordered.clone();
        same.take_ordered(&ordered);
        assert!(same.is_empty());
        let mut grown = ordered.clone();
        grown.add(id("1"), q(3), 5).expect("add");
        grown.add(id("2"), q(1), 5).expect("add");
        grown.take_ordered(&ordered);
        assert_eq!(grown.quantity_of(id("1")), 3);
        assert_eq!(grown.quantity_of(id("2")), 1);
        assert!(grown.rev() > ordered.rev());
    }

    #[test]
    fn setting_zero_removes_the_line() {
        let mut cart = Cart::default();
        cart.add(id("1"), q(1), 5).expect("add");
        cart.set(id("1"), None).expect("set");
        assert!(cart.is_empty());
    }

    #[test]
    fn a_stored_cart_with_an_out_of_range_quantity_is_no_cart() {
        assert!(serde_json::from_str::<Cart>(r#"{"r":1,"l":[[12,3]]}"#).is_ok());
        for bad in [r#"{"r":1,"l":[[12,0]]}"#, r#"{"r":1,"l":[[12,100]]}"#] {
            assert!(serde_json::from_str::<Cart>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_stored_form_is_compact() {
        let mut cart = Cart::default();
        cart.add(id("12"), q(3), 5).expect("add");
        assert_eq!(
            serde_json::to_string(&cart).expect("json"),
            r#"{"r":1,"l":[[12,3]]}"#
        );
    }
}
