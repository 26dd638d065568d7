-- Indexes the shop "already has": one nobody uses, one a better composite will make redundant, one too coarse.
CREATE INDEX legacy_orders_total ON orders (total);
CREATE INDEX legacy_orders_customer ON orders (customer_id);
CREATE INDEX legacy_products_category ON products (category);
